# reject ACLs: ICMP unreachable for UDP/ICMP, TCP RST for TCP (pinctrl).
ovn-nbctl ls-add sw0
for i in 1 2; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl acl-add sw0 from-lport 1000 'inport == "p1" && ip4.dst == 10.0.0.2 && (udp.dst == 53 || tcp.dst == 23 || icmp4)' reject
