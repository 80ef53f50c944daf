package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fabric-net/fabric/fabric/store"
)

// startFabricStore starts three store servers in this process on 127.0.0.1
// (each with its own Raft and RPC ports and data directory), bootstrapped
// together through SetPeers as gossip would, and a fourth store node in
// client mode. The returned put writes through the client, so every write
// crosses the mutual-TLS RPC to the leader and then Raft to the followers.
func startFabricStore(ctx context.Context, cl *cleanup) (putFunc, error) {
	const servers = 3
	dir, _, err := cl.tempDir("fabric-bench-store-")
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	ports, err := freePorts(2 * servers)
	if err != nil {
		return nil, err
	}
	var peers []store.Peer
	var nodes []*store.Store
	for i := range servers {
		cfg := store.DefaultConfig()
		cfg.NodeID = fmt.Sprintf("server%d", i)
		cfg.ClusterName = "bench"
		cfg.Secret = secret
		cfg.Server = true
		cfg.BootstrapExpect = servers
		cfg.DataDir = filepath.Join(dir, cfg.NodeID)
		cfg.RaftBind = "127.0.0.1:" + strconv.Itoa(ports[2*i])
		cfg.APIBind = "127.0.0.1:" + strconv.Itoa(ports[2*i+1])
		s, err := store.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("new %s: %w", cfg.NodeID, err)
		}
		if err := s.Start(ctx); err != nil {
			return nil, fmt.Errorf("start %s: %w", cfg.NodeID, err)
		}
		// Registered before the directory's removal runs (cleanup is LIFO).
		cl.add(func() { s.Close() })
		nodes = append(nodes, s)
		peers = append(peers, store.Peer{ID: cfg.NodeID, Server: true, RaftAddr: s.RaftAddr(), APIAddr: s.APIAddr(), Alive: true})
	}

	cfg := store.DefaultConfig()
	cfg.NodeID = "client"
	cfg.ClusterName = "bench"
	cfg.Secret = secret
	cfg.Server = false
	client, err := store.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("new client: %w", err)
	}
	if err := client.Start(ctx); err != nil {
		return nil, fmt.Errorf("start client: %w", err)
	}
	cl.add(func() { client.Close() })

	all := append(peers, store.Peer{ID: "client", Alive: true})
	for _, n := range append(nodes, client) {
		n.SetPeers(all)
	}

	// Ready when a write through the client commits.
	deadline := time.Now().Add(30 * time.Second)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := store.Put(pctx, client, "bench/ready", []byte("1"))
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no write committed within 30s of start: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var leader string
	for _, n := range nodes {
		if st := n.Status(); st.Role == "leader" {
			leader = st.Leader
		}
	}
	progress("store: fabric store ready, leader %s", leader)
	return func(ctx context.Context, key string, value []byte) error {
		_, err := store.Put(ctx, client, key, value)
		return err
	}, nil
}
