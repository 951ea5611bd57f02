# reject ACL (to-lport) over IPv6: ICMPv6 unreachable / TCP RST.
ovn-nbctl ls-add sw0
for i in 1 2; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i fd00::$i"
done
ovn-nbctl acl-add sw0 to-lport 1000 'outport == "p2" && ip6 && (udp.dst == 53 || tcp.dst == 80 || icmp6.type == 128)' reject
