# Generated replies (nd_na, reject) for a child port go back through the
# parent's port with the child's tag.
ovn-nbctl ls-add sw0
ovn-nbctl lsp-add sw0 vm1 -- lsp-set-addresses vm1 "00:00:00:00:00:01 10.0.0.1 fd00::1"
ovn-nbctl lsp-add sw0 c1 vm1 10 -- lsp-set-addresses c1 "00:00:00:00:0c:01 10.0.0.11 fd00::11"
ovn-nbctl lsp-add sw0 vm2 -- lsp-set-addresses vm2 "00:00:00:00:00:02 10.0.0.2 fd00::2"
ovn-nbctl acl-add sw0 from-lport 1000 'inport == "c1" && (udp.dst == 53 || tcp.dst == 23)' reject
