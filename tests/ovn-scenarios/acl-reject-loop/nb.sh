# A reject ACL that also matches the packets reject itself generates
# (TCP RST, ICMP unreachable): ovn-controller never answers those.
ovn-nbctl ls-add sw0
for i in 1 2; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl acl-add sw0 from-lport 1000 'inport == "p1" && ip4' reject
