# A VLAN provider network: localnet port (network physnet, tag 100) and two VIFs.
ovn-nbctl ls-add sw0
ovn-nbctl lsp-add sw0 p1 -- lsp-set-addresses p1 "00:00:00:00:00:01 10.0.0.1"
ovn-nbctl lsp-add sw0 p2 -- lsp-set-addresses p2 "00:00:00:00:00:02 10.0.0.2"
ovn-nbctl lsp-add sw0 ln -- lsp-set-type ln localnet -- lsp-set-addresses ln unknown \
    -- lsp-set-options ln network_name=physnet -- set Logical_Switch_Port ln tag=100
