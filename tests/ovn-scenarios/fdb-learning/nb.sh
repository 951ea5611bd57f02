# FDB learning (lookup_fdb/put_fdb, northd emits it for ports with
# "unknown" addresses): p3 and p4 are both "unknown".
ovn-nbctl ls-add sw0
ovn-nbctl lsp-add sw0 p1 -- lsp-set-addresses p1 "00:00:00:00:00:01 10.0.0.1"
ovn-nbctl lsp-add sw0 p3 -- lsp-set-addresses p3 unknown
ovn-nbctl lsp-add sw0 p4 -- lsp-set-addresses p4 unknown
