# Two switches with the same IP subnet: no traffic crosses between them.
ovn-nbctl ls-add swa
ovn-nbctl ls-add swb
ovn-nbctl lsp-add swa a1 -- lsp-set-addresses a1 "00:00:00:00:0a:01 10.0.0.1"
ovn-nbctl lsp-add swa a2 -- lsp-set-addresses a2 "00:00:00:00:0a:02 10.0.0.2"
ovn-nbctl lsp-add swb b1 -- lsp-set-addresses b1 "00:00:00:00:0b:01 10.0.0.1"
ovn-nbctl lsp-add swb b2 -- lsp-set-addresses b2 "unknown"
