# ACL matches that ovn-northd copies into logical flows but OVN's expression
# parser rejects (nominal fields: `!tcp`, `ip.ttl < 5`). ovn-controller logs
# "error parsing match" and installs nothing for such a flow
# (controller/lflow.c:1015-1020), ovn-trace skips it too: the ACL has no effect.
ovn-nbctl ls-add sw0
for i in 1 2 3; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i fd00::$i"
done
ovn-nbctl acl-add sw0 from-lport 700 'ip6 && (udp.src[0] == 1 || ip.ttl < 5)' drop
ovn-nbctl acl-add sw0 to-lport 600 'outport == "p3" && ip4 && !(tcp || icmp4)' drop
