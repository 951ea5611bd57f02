# p3 has "unknown" addresses: it gets every frame whose eth.dst no port owns.
ovn-nbctl ls-add sw0
ovn-nbctl lsp-add sw0 p1 -- lsp-set-addresses p1 "00:00:00:00:00:01 10.0.0.1"
ovn-nbctl lsp-add sw0 p2 -- lsp-set-addresses p2 "00:00:00:00:00:02 10.0.0.2"
ovn-nbctl lsp-add sw0 p3 -- lsp-set-addresses p3 unknown
