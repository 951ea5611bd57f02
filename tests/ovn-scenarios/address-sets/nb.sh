# Address sets in ACL matches ($name).
ovn-nbctl ls-add sw0
for i in 1 2 3; do
    ovn-nbctl lsp-add sw0 p$i -- lsp-set-addresses p$i "00:00:00:00:00:0$i 10.0.0.$i fd00::$i"
done
ovn-nbctl create Address_Set name=blocked addresses='"10.0.0.3", "192.168.0.0/16"'
ovn-nbctl create Address_Set name=blocked6 addresses='"fd00::3"'
ovn-nbctl acl-add sw0 from-lport 1000 'ip4.src == $blocked' drop
ovn-nbctl acl-add sw0 to-lport 1000 'ip6.dst == $blocked6' drop
