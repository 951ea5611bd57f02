# ARP responder for VIF addresses (ls_in_arp_rsp).
ovn-nbctl ls-add sw0
for i in 1 2 3; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl lsp-set-addresses p3 "00:00:00:00:00:03 10.0.0.3 10.0.0.33"
