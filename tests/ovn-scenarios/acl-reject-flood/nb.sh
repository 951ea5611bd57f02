# A to-lport reject on one member of a flood: the other copies are delivered,
# the rejected copy is answered (its eth.src is the broadcast address, as
# pinctrl swaps the original addresses).
ovn-nbctl ls-add sw0
for i in 1 2 3; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl acl-add sw0 to-lport 1000 'outport == "p2" && udp.dst == 53' reject
ovn-nbctl acl-add sw0 to-lport 1000 'outport == "p3" && tcp.dst == 80' reject
