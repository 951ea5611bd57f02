# Stateless ACL priorities: drop all IPv4 at 100, allow-stateless ssh at 200.
ovn-nbctl ls-add sw0
for i in 1 2; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl acl-add sw0 from-lport 100 'ip4' drop
ovn-nbctl acl-add sw0 from-lport 200 'tcp.dst == 22' allow-stateless
ovn-nbctl acl-add sw0 from-lport 300 'tcp.dst == 22 && ip4.src == 10.0.0.66' drop
