# Port state and address options: a disabled port, a port with two MAC
# addresses, a localport.
ovn-nbctl ls-add sw0
ovn-nbctl lsp-add sw0 p1 -- lsp-set-addresses p1 "00:00:00:00:00:01 10.0.0.1"
ovn-nbctl lsp-add sw0 p2 -- lsp-set-addresses p2 "00:00:00:00:00:02 10.0.0.2" -- lsp-set-enabled p2 disabled
ovn-nbctl lsp-add sw0 p3 -- lsp-set-addresses p3 "00:00:00:00:00:03 10.0.0.3" "00:00:00:00:00:33 10.0.0.33"
ovn-nbctl lsp-add sw0 lp -- lsp-set-type lp localport -- lsp-set-addresses lp "00:00:00:00:00:fe 10.0.0.254"
