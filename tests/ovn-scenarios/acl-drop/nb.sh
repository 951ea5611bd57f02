# Stateless from-lport ACLs: drop DNS, allow-stateless the rest (no conntrack).
ovn-nbctl ls-add sw0
for i in 1 2 3; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl acl-add sw0 from-lport 1000 'inport == "p1" && udp.dst == 53' drop
ovn-nbctl acl-add sw0 from-lport 900 'ip4' allow-stateless
