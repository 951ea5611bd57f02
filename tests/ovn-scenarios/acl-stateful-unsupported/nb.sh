# An allow-related ACL forces conntrack on the switch, which Petrel does not
# have yet: the conntrack stages are refused and the packets that reach them
# dropped as `unsupported` (declared in packets with `#! petrel: unsupported`).
ovn-nbctl ls-add sw0
for i in 1 2; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl acl-add sw0 from-lport 1000 'ip4 && tcp.dst == 80' allow-related
