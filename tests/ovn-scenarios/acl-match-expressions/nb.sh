# The match language in stateless ACLs: ranges, !=, sets, CIDRs, bit ranges,
# || across fields (the compiler's normalisation).
ovn-nbctl ls-add sw0
for i in 1 2 3; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i fd00::$i"
done
# drop TCP ports 1000-1999 except from 10.0.0.3
ovn-nbctl acl-add sw0 from-lport 900 'tcp.dst >= 1000 && tcp.dst <= 1999 && ip4.src != 10.0.0.3' drop
# drop UDP to 10.0.0.0/30 from anything but {10.0.0.1, 10.0.0.2} (CIDR, != set)
ovn-nbctl acl-add sw0 from-lport 800 'udp && ip4.dst == 10.0.0.0/30 && ip4.src != {10.0.0.1, 10.0.0.2}' drop
# drop IPv6 UDP with an odd source port (bit range) or a hop limit in {1, 2, 3}
ovn-nbctl acl-add sw0 from-lport 700 'ip6 && (udp.src[0] == 1 || ip.ttl == {1, 2, 3})' drop
# to-lport: drop UDP or anything from 10.0.0.99 to p3 (|| across fields)
ovn-nbctl acl-add sw0 to-lport 600 'outport == "p3" && (udp || ip4.src == 10.0.0.99)' drop
