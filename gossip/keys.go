package gossip

import (
	"encoding/base64"
	"fmt"
	"strings"
)

// ParseKey decodes a gossip encryption key written as standard base64 (as
// printed by `fabric keygen`). It accepts AES-128, -192 and -256
// keys (16, 24 or 32 bytes).
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("gossip: parse key: key is empty: generate one with `fabric keygen`")
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("gossip: parse key: not standard base64 (%v): generate one with `fabric keygen`", err)
	}
	if err := checkKey(k); err != nil {
		return nil, fmt.Errorf("gossip: parse key: %w", err)
	}
	return k, nil
}

func checkKey(k []byte) error {
	switch len(k) {
	case 16, 24, 32:
		return nil
	}
	return fmt.Errorf("key is %d bytes: use 16, 24 or 32 bytes (AES-128/192/256), e.g. from `fabric keygen`", len(k))
}

// InstallKey adds k to the keyring for decryption; the primary key is
// unchanged. Rotation is InstallKey on every node, then UseKey on every node,
// then RemoveKey of the old key on every node: at each step every node can
// still read what every other node sends. Installing a key twice is a no-op.
func (p *Pool) InstallKey(k []byte) error {
	// memberlist's Keyring reads its key list without its lock while
	// changing it, so changes are serialized here.
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
	if err := p.keyringReady(k); err != nil {
		return fmt.Errorf("gossip: install key: %w", err)
	}
	if err := p.keyring.AddKey(clone(k)); err != nil {
		return fmt.Errorf("gossip: install key: %w", err)
	}
	p.log.Info("gossip key installed", "keys", len(p.keyring.GetKeys()))
	return nil
}

// UseKey makes an installed key the primary, the one that encrypts.
func (p *Pool) UseKey(k []byte) error {
	// memberlist's Keyring reads its key list without its lock while
	// changing it, so changes are serialized here.
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
	if err := p.keyringReady(k); err != nil {
		return fmt.Errorf("gossip: use key: %w", err)
	}
	if err := p.keyring.UseKey(clone(k)); err != nil {
		return fmt.Errorf("gossip: use key: %w: install it first", err)
	}
	p.log.Info("gossip primary key changed")
	return nil
}

// RemoveKey drops a key from the keyring. The primary key cannot be removed:
// UseKey another one first. Removing a key that is not installed is a no-op.
func (p *Pool) RemoveKey(k []byte) error {
	// memberlist's Keyring reads its key list without its lock while
	// changing it, so changes are serialized here.
	p.keyMu.Lock()
	defer p.keyMu.Unlock()
	if err := p.keyringReady(k); err != nil {
		return fmt.Errorf("gossip: remove key: %w", err)
	}
	if err := p.keyring.RemoveKey(clone(k)); err != nil {
		return fmt.Errorf("gossip: remove key: %w: make another key primary with UseKey first", err)
	}
	p.log.Info("gossip key removed", "keys", len(p.keyring.GetKeys()))
	return nil
}

// Keys returns copies of the primary key and of every installed key (the
// primary first). Both are nil when encryption is off.
func (p *Pool) Keys() (primary []byte, all [][]byte) {
	kr := p.keyring
	if kr == nil {
		return nil, nil
	}
	primary = clone(kr.GetPrimaryKey())
	for _, k := range kr.GetKeys() {
		all = append(all, clone(k))
	}
	return primary, all
}

// keyringReady refuses key operations on a pool started without keys:
// memberlist cannot switch encryption on at runtime without splitting the
// cluster, so encryption is decided at start.
func (p *Pool) keyringReady(k []byte) error {
	if p.keyring == nil {
		return fmt.Errorf("encryption is off: restart the pool with Config.Keys to use encryption")
	}
	return checkKey(k)
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
