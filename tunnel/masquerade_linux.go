//go:build linux

package tunnel

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// masqTable is the nftables table Fabric owns in the node's namespace; it
// holds nothing but the masquerade chain, so replacing its rules never
// touches anyone else's.
const masqTable = "fabric_nat"

// SetMasquerade makes traffic from the pod pools to anywhere outside them
// leave by oif with the node's own address (source NAT through the kernel's
// connection tracking, which also turns the replies back). The rules are
// replaced as a whole in one transaction, so calling it again with the same
// arguments changes nothing and a failure leaves the previous set in place.
// No pools removes the masquerade.
//
// Replies of workloads to the datapath's own source NAT (outside traffic
// that another node forwarded to a backend here, from its address and a
// port of natPorts) are left alone: they cross this node's stack back to
// that node unencapsulated, and the kernel's connection tracking, which
// never saw the connection start, would otherwise masquerade them mid-way.
// nodes are the cluster's node addresses.
func SetMasquerade(oif string, pools []netip.Prefix, nodes []netip.Addr, natPorts [2]uint16) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("masquerade: nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return fmt.Errorf("masquerade: list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == masqTable {
			c.DelTable(t) // replaced whole, in the same transaction
		}
	}
	if len(pools) == 0 {
		if err := c.Flush(); err != nil {
			return fmt.Errorf("masquerade: remove nftables table %s: %w", masqTable, err)
		}
		return nil
	}
	t := c.AddTable(&nftables.Table{Name: masqTable, Family: nftables.TableFamilyINet})
	ch := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, oif)
	sets := map[bool]*nftables.Set{
		true:  {Table: t, Name: "nodes4", KeyType: nftables.TypeIPAddr},
		false: {Table: t, Name: "nodes6", KeyType: nftables.TypeIP6Addr},
	}
	for is4, set := range sets {
		var elems []nftables.SetElement
		for _, a := range nodes {
			if a.Unmap().Is4() == is4 {
				elems = append(elems, nftables.SetElement{Key: a.Unmap().AsSlice()})
			}
		}
		if err := c.AddSet(set, elems); err != nil {
			return fmt.Errorf("masquerade: set of node addresses: %w", err)
		}
	}
	from, to := make([]byte, 2), make([]byte, 2)
	binary.BigEndian.PutUint16(from, natPorts[0])
	binary.BigEndian.PutUint16(to, natPorts[1])
	for _, is4 := range []bool{true, false} {
		family, daddr, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
		if !is4 {
			family, daddr, n = unix.NFPROTO_IPV6, 24, 16
		}
		for _, proto := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
				&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
				&expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: from, ToData: to},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: n},
				&expr.Lookup{SourceRegister: 1, SetName: sets[is4].Name, SetID: sets[is4].ID},
				&expr.Verdict{Kind: expr.VerdictAccept},
			}})
		}
	}
	for _, p := range pools {
		p = p.Masked()
		family, saddr, daddr, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(16), uint32(4)
		if p.Addr().Is6() {
			family, saddr, daddr, n = unix.NFPROTO_IPV6, 8, 24, 16
		}
		exprs := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
			&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		}
		exprs = append(exprs, inPrefix(saddr, n, p, expr.CmpOpEq)...)
		// Traffic between pods never needs it; every pool of the family
		// is excluded as a destination.
		for _, q := range pools {
			if q.Addr().Is4() == p.Addr().Is4() {
				exprs = append(exprs, inPrefix(daddr, n, q.Masked(), expr.CmpOpNeq)...)
			}
		}
		exprs = append(exprs, &expr.Masq{})
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("masquerade: program nftables table %s: %w", masqTable, err)
	}
	return nil
}

// inPrefix matches the n-byte address at offset off of the network header
// against p (op: equal, or not equal).
func inPrefix(off, n uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
	mask := make([]byte, n)
	for i := 0; i < p.Bits(); i++ {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: op, Register: 1, Data: p.Addr().AsSlice()},
	}
}
