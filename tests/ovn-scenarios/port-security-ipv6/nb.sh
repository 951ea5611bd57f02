# p1: MAC + IPv6 port security; p2 none.
ovn-nbctl ls-add sw0
ovn-nbctl lsp-add sw0 p1 -- lsp-set-addresses p1 "00:00:00:00:00:01 fd00::1" -- lsp-set-port-security p1 "00:00:00:00:00:01 fd00::1"
ovn-nbctl lsp-add sw0 p2 -- lsp-set-addresses p2 "00:00:00:00:00:02 fd00::2"
ovn-nbctl lsp-add sw0 p3 -- lsp-set-addresses p3 "00:00:00:00:00:03 fd00::3"
