//! Why a packet was dropped: one counter per reason (OVS `COVERAGE_INC`).
//!
//! Every drop anywhere in the fast path names one [`DropReason`]; the PMD
//! keeps a `[u64; DropReason::COUNT]` per thread and `petreld` prints and
//! exports them by [`DropReason::name`]. Names are stable: tools match on them.

macro_rules! drop_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)+) => {
        /// Why the fast path dropped a packet.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[doc = $doc])* $variant,)+
        }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)+];
            /// How many reasons there are (the length of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name used in stats, logs and metrics.
            pub const fn name(self) -> &'static str {
                match self { $(DropReason::$variant => $name,)+ }
            }

            /// Index into a `[u64; DropReason::COUNT]` counter array.
            #[inline]
            pub const fn index(self) -> usize {
                self as usize
            }
        }

        impl core::fmt::Display for DropReason {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

drop_reasons! {
    // ---- malformed input (wire / flow extraction); the wire-layer helper owns this block ----
    /// Frame shorter than an Ethernet header.
    EthTruncated => "eth_truncated",
    /// A VLAN TPID with fewer than 4 bytes after it.
    VlanTruncated => "vlan_truncated",
    /// Three or more VLAN tags (only an outer and an inner tag are parsed).
    TooManyVlanTags => "too_many_vlan_tags",
    /// ARP/RARP shorter than 28 bytes, or not Ethernet/IPv4 (htype 1, ptype 0x0800, 6/4).
    ArpMalformed => "arp_malformed",
    /// IPv4 header shorter than 20 bytes or than its IHL says.
    Ipv4Truncated => "ipv4_truncated",
    /// IPv4 EtherType but the version nibble is not 4.
    Ipv4BadVersion => "ipv4_bad_version",
    /// IPv4 IHL below 5.
    Ipv4BadIhl => "ipv4_bad_ihl",
    /// IPv4 Total Length below the header length or beyond the frame.
    Ipv4BadTotalLen => "ipv4_bad_total_len",
    /// IPv4 header checksum wrong (checked only where a checksum is verified, e.g. Geneve decap).
    Ipv4BadChecksum => "ipv4_bad_checksum",
    /// IPv6 fixed header shorter than 40 bytes.
    Ipv6Truncated => "ipv6_truncated",
    /// IPv6 EtherType but the version nibble is not 6.
    Ipv6BadVersion => "ipv6_bad_version",
    /// IPv6 Payload Length beyond the frame.
    Ipv6BadPayloadLen => "ipv6_bad_payload_len",
    /// An IPv6 extension header that does not fit in the payload.
    Ipv6ExtTruncated => "ipv6_ext_truncated",
    /// More IPv6 extension headers than the fast path walks.
    Ipv6TooManyExt => "ipv6_too_many_ext",
    /// ICMP or ICMPv6 message shorter than its 8-byte header.
    IcmpTruncated => "icmp_truncated",
    /// Neighbor Discovery message with a short body or a malformed or duplicated option (RFC 4861 §6.1, §7.1).
    NdMalformed => "nd_malformed",
    /// TCP header shorter than 20 bytes.
    TcpTruncated => "tcp_truncated",
    /// TCP Data Offset below 5 or beyond the IP payload.
    TcpBadDataOffset => "tcp_bad_data_offset",
    /// UDP header shorter than 8 bytes.
    UdpTruncated => "udp_truncated",
    /// UDP Length below 8 or beyond the IP payload.
    UdpBadLen => "udp_bad_len",
    /// UDP checksum wrong (checked only where verified, e.g. Geneve decap).
    UdpBadChecksum => "udp_bad_checksum",
    /// SCTP common header shorter than 12 bytes.
    SctpTruncated => "sctp_truncated",
    /// Geneve decapsulation asked for a packet that is not Geneve.
    NotGeneve => "not_geneve",
    /// Geneve header shorter than 8 bytes.
    GeneveTruncated => "geneve_truncated",
    /// Geneve version other than 0.
    GeneveBadVersion => "geneve_bad_version",
    /// Geneve options beyond the UDP payload.
    GeneveBadOptLen => "geneve_bad_opt_len",
    /// Geneve control (OAM, O bit) packet: never forwarded.
    GeneveOam => "geneve_oam",
    /// Geneve protocol type other than 0x6558 (Ethernet).
    GeneveBadProtocol => "geneve_bad_protocol",
    /// Geneve option overrunning the options, or OVN's option duplicated or not 4 bytes.
    GeneveBadOption => "geneve_bad_option",
    /// Geneve option we do not know with its critical bit set (RFC 8926 §3.5).
    GeneveCriticalOption => "geneve_critical_option",
    /// Geneve packet without OVN's option (class 0x0102, type 0x80).
    GeneveNoOvnOption => "geneve_no_ovn_option",
    /// Geneve payload shorter than an Ethernet header.
    GeneveInnerTruncated => "geneve_inner_truncated",
    /// Geneve encap asked for an ingress port key above 15 bits.
    GeneveBadPortKey => "geneve_bad_port_key",
    /// Encapsulation would make the outer IP packet longer than 65535 bytes.
    EncapTooBig => "encap_too_big",
    /// VLAN pop or VID rewrite on a frame without a VLAN tag.
    VlanNoTag => "vlan_no_tag",

    // ---- forwarding (pmd / static modes) ----
    /// No output was found for the packet (no xconnect peer, no MAC entry and no flood set).
    NoOutput => "no_output",
    /// A VLAN-tagged port received a frame without its tag, or with another tag.
    VlanMismatch => "vlan_mismatch",
    /// The transmit queue stayed full after a retry; the packet was freed.
    TxFull => "tx_full",
    /// A header could not be pushed: the buffer had no headroom left.
    NoHeadroom => "no_headroom",
    /// The packet spans several mbuf segments, which the fast path does not handle.
    MultiSegment => "multi_segment",
    /// A Geneve packet arrived for a VNI or tunnel that is not configured here.
    GeneveUnknownTunnel => "geneve_unknown_tunnel",
    /// Would have sent the packet back out of the port it came in on.
    Hairpin => "hairpin",
    /// A copy for flooding could not be made: the mbuf pool was empty.
    NoMbuf => "no_mbuf",
    /// ARP to the node's tunnel IP (learnt) or other traffic for it that is not Geneve, ping or ARP: consumed.
    UnderlayConsumed => "underlay_consumed",
    /// No uplink reaches the remote chassis (no connected subnet, no gateway; or an IPv6 tunnel endpoint).
    TunnelNoRoute => "tunnel_no_route",
    /// The tunnel next hop's MAC is not known yet (an ARP request was sent).
    TunnelNeighUnresolved => "tunnel_neigh_unresolved",
    /// The frame does not fit the uplink's MTU once encapsulated.
    TunnelMtuExceeded => "tunnel_mtu_exceeded",

    // ---- table runtime (table::exec) ----
    /// The packet reached a construct the tables cannot run (refused by the compiler, never approximated).
    Unsupported => "unsupported",
    /// The packet arrived on a port that is bound to no logical port.
    NotBound => "not_bound",
    /// No rule of a stage matched (an OpenFlow table miss).
    StageMiss => "stage_miss",
    /// An explicit `drop;` action.
    Explicit => "explicit",
    /// Output to the logical inport without `flags.loopback`.
    Loopback => "loopback",
    /// The logical outport (or a group member) is bound nowhere.
    NoBinding => "no_binding",
    /// A Geneve packet for a datapath (VNI) this node does not know.
    UnknownDatapath => "unknown_datapath",
    /// The pipeline walk exceeded its step or depth bound.
    PipelineTooDeep => "pipeline_too_deep",
    /// One packet produced more outputs than the executor holds.
    TooManyOutputs => "too_many_outputs",
    /// The pipeline punted to the slow path, and none is attached yet.
    SlowPath => "slow_path",
    /// `reject` of a TCP RST or an ICMP destination-unreachable, which pinctrl never answers.
    RejectIgnored => "reject_ignored",
    /// A packet-generating action on a packet it does not apply to (pinctrl ignores it: e.g. `nd_na` on a non-ND packet, `tcp_reset` on non-TCP).
    GenerateNotApplicable => "generate_not_applicable",
    /// The packet was answered with a generated packet and went nowhere else (consumed, as by pinctrl).
    Generated => "generated",

    // ---- QoS (qos/, pmd/fwd/ext.rs) ----
    /// Over a port's policer (ingress: sent by the port; egress: to be sent to it).
    QosPoliced => "qos_policed",
    /// Over a meter of the tables (OVN `set_meter`, a Southbound `Meter`): the copies after the meter were not made.
    MeterDrop => "meter_drop",
}
