# to-lport stateless ACLs (egress pipeline, ls_out_acl).
ovn-nbctl ls-add sw0
for i in 1 2 3; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl acl-add sw0 to-lport 1000 'outport == "p2" && udp' drop
ovn-nbctl acl-add sw0 to-lport 900 'outport == "p3" && ip4.src == 10.0.0.1' drop
