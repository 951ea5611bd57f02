# Meters in profile forward exactly as without them (ovn-trace does not
# model meters; the over-rate behaviour is tested in dataplane/tests/qos.rs):
# NB QoS bandwidth limits (set_meter in ls_in_qos_meter / ls_out_qos_meter)
# and a CoPP meter on reject (controller_meter).
ovn-nbctl ls-add sw0
for i in 1 2 3; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i"
done
ovn-nbctl qos-add sw0 from-lport 100 'inport == "p1"' rate=100000 burst=100000
ovn-nbctl qos-add sw0 to-lport 100 'outport == "p2" && ip4' rate=100000
ovn-nbctl meter-add m1 drop 1000 pktps 1000
ovn-nbctl copp-add copp1 reject m1 -- ls-copp-add copp1 sw0
ovn-nbctl acl-add sw0 from-lport 1000 'inport == "p1" && tcp.dst == 23' reject
