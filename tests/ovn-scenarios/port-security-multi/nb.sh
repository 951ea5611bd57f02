# Port security with two entries (two MACs, each with its IPs), and a CIDR.
ovn-nbctl ls-add sw0
ovn-nbctl lsp-add sw0 p1 -- lsp-set-addresses p1 "00:00:00:00:00:01 10.0.0.1" "00:00:00:00:01:01 10.0.1.1" \
    -- lsp-set-port-security p1 "00:00:00:00:00:01 10.0.0.1" "00:00:00:00:01:01 10.0.1.0/24"
ovn-nbctl lsp-add sw0 p2 -- lsp-set-addresses p2 "00:00:00:00:00:02 10.0.0.2"
