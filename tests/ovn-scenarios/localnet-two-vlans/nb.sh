# Two switches on the same physical network (one uplink, up-physnet), VLAN 10
# and VLAN 20, plus a second flat network on another uplink.
ovn-nbctl ls-add swa
ovn-nbctl lsp-add swa a1 -- lsp-set-addresses a1 "00:00:00:00:0a:01 10.0.0.1"
ovn-nbctl lsp-add swa lna -- lsp-set-type lna localnet -- lsp-set-addresses lna unknown \
    -- lsp-set-options lna network_name=physnet -- set Logical_Switch_Port lna tag=10
ovn-nbctl ls-add swb
ovn-nbctl lsp-add swb b1 -- lsp-set-addresses b1 "00:00:00:00:0b:01 10.0.0.1"
ovn-nbctl lsp-add swb lnb -- lsp-set-type lnb localnet -- lsp-set-addresses lnb unknown \
    -- lsp-set-options lnb network_name=physnet -- set Logical_Switch_Port lnb tag=20
ovn-nbctl ls-add swc
ovn-nbctl lsp-add swc c1 -- lsp-set-addresses c1 "00:00:00:00:0c:01 10.1.0.1"
ovn-nbctl lsp-add swc lnc -- lsp-set-type lnc localnet -- lsp-set-addresses lnc unknown -- lsp-set-options lnc network_name=flat
