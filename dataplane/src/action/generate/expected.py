from scapy.all import *
def arr(name, p):
    b = bytes(p)
    print(f"// {name}: {len(b)} bytes")
    print(f"const {name}: [u8; {len(b)}] = [")
    for i in range(0, len(b), 16):
        print("    " + ", ".join(f"0x{x:02x}" for x in b[i:i+16]) + ",")
    print("];")
M1="00:00:00:00:00:01"; M2="00:00:00:00:00:02"
# NS from fd00::2 for fd00::1
ns = Ether(src=M2, dst="33:33:ff:00:00:01")/IPv6(src="fd00::2", dst="ff02::1:ff00:1", hlim=255)/ICMPv6ND_NS(tgt="fd00::1")/ICMPv6NDOptSrcLLAddr(lladdr=M2)
arr("NS", ns)
na = Ether(dst=M2, src=M1)/IPv6(src="fd00::1", dst="fd00::2", hlim=255)/ICMPv6ND_NA(R=0,S=1,O=1,tgt="fd00::1")/ICMPv6NDOptDstLLAddr(lladdr=M1)
arr("NA", na)
na_r = Ether(dst=M2, src=M1)/IPv6(src="fd00::1", dst="fd00::2", hlim=255)/ICMPv6ND_NA(R=1,S=1,O=1,tgt="fd00::1")/ICMPv6NDOptDstLLAddr(lladdr=M1)
arr("NA_ROUTER", na_r)
udp4 = Ether(src=M1, dst=M2)/IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=7)/UDP(sport=5000, dport=53)/b"hello"
arr("UDP4", udp4)
icmp4 = Ether(src=M2, dst=M1)/IP(src="10.0.0.2", dst="10.0.0.1", ttl=255, tos=0, id=0, flags="DF")/ICMP(type=3, code=3)/bytes(udp4[IP])
arr("UDP4_UNREACH", icmp4)
udp6 = Ether(src=M1, dst=M2)/IPv6(src="fd00::1", dst="fd00::2", hlim=64)/UDP(sport=5000, dport=53)/b"hello"
arr("UDP6", udp6)
icmp6 = Ether(src=M2, dst=M1)/IPv6(src="fd00::2", dst="fd00::1", hlim=255)/ICMPv6DestUnreach(code=4)/bytes(udp6[IPv6])
arr("UDP6_UNREACH", icmp6)
tcp4 = Ether(src=M1, dst=M2)/IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=9)/TCP(sport=40000, dport=80, seq=1000, flags="S", window=8192)
arr("TCP4", tcp4)
rst4 = Ether(src=M2, dst=M1)/IP(src="10.0.0.2", dst="10.0.0.1", ttl=63, id=0, flags="DF")/TCP(sport=80, dport=40000, seq=0, ack=1001, flags="RA", window=0)
arr("TCP4_RST", rst4)
tcp6 = Ether(src=M1, dst=M2)/IPv6(src="fd00::1", dst="fd00::2", hlim=64)/TCP(sport=40000, dport=80, seq=0xfffffffe, flags="S", window=8192)
arr("TCP6", tcp6)
rst6 = Ether(src=M2, dst=M1)/IPv6(src="fd00::2", dst="fd00::1", hlim=63)/TCP(sport=80, dport=40000, seq=0, ack=0xffffffff, flags="RA", window=0)
arr("TCP6_RST", rst6)
arp = Ether(src=M1, dst="ff:ff:ff:ff:ff:ff")/ARP(op=1, hwsrc=M1, psrc="10.0.0.1", hwdst="00:00:00:00:00:00", pdst="10.0.0.2")
arr("ARP_REQ", arp)
# Big UDP: payload clamp at 534 bytes of the original IP packet.
big = Ether(src=M1, dst=M2)/IP(src="10.0.0.1", dst="10.0.0.2", ttl=64, id=7)/UDP(sport=5000, dport=53)/(bytes(range(256))*4)
big_r = Ether(src=M2, dst=M1)/IP(src="10.0.0.2", dst="10.0.0.1", ttl=255, id=0, flags="DF")/ICMP(type=3, code=3)/bytes(big[IP])[:534]
b = bytes(Ether(bytes(big_r)))
rb = Ether(bytes(big_r))
print("// BIG: len", len(bytes(big)), "reply len", len(b), "ip csum", hex(rb[IP].chksum), "icmp csum", hex(rb[ICMP].chksum))
# Tagged ICMP (VLAN 5 kept, as pinctrl pushes it)
icmp4v = Ether(src=M2, dst=M1)/Dot1Q(vlan=5)/IP(src="10.0.0.2", dst="10.0.0.1", ttl=255, tos=0, id=0, flags="DF")/ICMP(type=3, code=3)/bytes(udp4[IP])
arr("UDP4_UNREACH_VLAN5", icmp4v)
