# Port groups in ACLs (@pg) and their generated address sets ($pg_ip4).
ovn-nbctl ls-add sw0
for i in 1 2 3 4; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl pg-add web p1 p2
ovn-nbctl acl-add web to-lport 1000 'outport == @web && tcp.dst == 80' allow-stateless
ovn-nbctl acl-add web to-lport 900 'outport == @web && ip4' drop
ovn-nbctl acl-add sw0 from-lport 1000 'inport == p4 && ip4.dst == $web_ip4 && udp' drop
