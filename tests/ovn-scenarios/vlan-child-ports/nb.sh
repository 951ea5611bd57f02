# Container ports: c1 (tag 10) and c2 (tag 20) behind parent vm1; vm2 plain.
ovn-nbctl ls-add sw0
ovn-nbctl lsp-add sw0 vm1 -- lsp-set-addresses vm1 "00:00:00:00:00:01 10.0.0.1"
ovn-nbctl lsp-add sw0 c1 vm1 10 -- lsp-set-addresses c1 "00:00:00:00:0c:01 10.0.0.11"
ovn-nbctl lsp-add sw0 c2 vm1 20 -- lsp-set-addresses c2 "00:00:00:00:0c:02 10.0.0.12"
ovn-nbctl lsp-add sw0 vm2 -- lsp-set-addresses vm2 "00:00:00:00:00:02 10.0.0.2"
