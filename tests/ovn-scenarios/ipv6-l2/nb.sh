# IPv6 switching: unicast, link-local, multicast.
ovn-nbctl ls-add sw0
for i in 1 2 3; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i fd00::$i"
done
