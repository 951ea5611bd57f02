# Four VIFs: broadcast floods to every port but the inport (_MC_flood).
ovn-nbctl ls-add sw0
for i in 1 2 3 4; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
