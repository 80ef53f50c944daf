package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// etcdCluster is a 3-member etcd cluster of real processes on 127.0.0.1,
// with etcd's default durability (fsync of the WAL on every commit, like
// raft-boltdb's fsync on every append) and default timers.
type etcdCluster struct {
	clientURLs []string
	leader     string // client URL of the leader, where writes are sent
	http       *http.Client
}

func startEtcd(ctx context.Context, cl *cleanup, size int) (*etcdCluster, error) {
	if _, err := exec.LookPath("etcd"); err != nil {
		return nil, fmt.Errorf("etcd not found: install Debian's etcd-server (`apt-get install -y etcd-server`, or `make bench`): %w", err)
	}
	dir, _, err := cl.tempDir("fabric-bench-etcd-")
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(2 * size)
	if err != nil {
		return nil, err
	}
	names := make([]string, size)
	peerURLs := make([]string, size)
	clientURLs := make([]string, size)
	var initial []string
	for i := range size {
		names[i] = fmt.Sprintf("etcd%d", i)
		clientURLs[i] = "http://127.0.0.1:" + strconv.Itoa(ports[2*i])
		peerURLs[i] = "http://127.0.0.1:" + strconv.Itoa(ports[2*i+1])
		initial = append(initial, names[i]+"="+peerURLs[i])
	}
	for i := range size {
		logPath := filepath.Join(dir, names[i]+".log")
		logf, err := os.Create(logPath)
		if err != nil {
			return nil, fmt.Errorf("etcd log: %w", err)
		}
		cmd := exec.Command("etcd",
			"--name", names[i],
			"--data-dir", filepath.Join(dir, names[i]),
			"--listen-client-urls", clientURLs[i],
			"--advertise-client-urls", clientURLs[i],
			"--listen-peer-urls", peerURLs[i],
			"--initial-advertise-peer-urls", peerURLs[i],
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", filepath.Base(dir),
			"--logger", "zap",
			"--log-level", "warn",
		)
		cmd.Stdout = logf
		cmd.Stderr = logf
		// Debian's unit file sets ETCD_* variables; none may leak in.
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		_, err = cl.startProcess(cmd)
		logf.Close()
		if err != nil {
			return nil, fmt.Errorf("etcd %s: %w", names[i], err)
		}
	}
	c := &etcdCluster{
		clientURLs: clientURLs,
		http: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256},
		},
	}
	if err := c.waitLeader(ctx, 30*time.Second); err != nil {
		return nil, fmt.Errorf("etcd cluster in %s (logs there): %w", dir, err)
	}
	return c, nil
}

// waitLeader waits until every member answers and agrees on a leader, and
// remembers the leader's client URL: writes go straight to it, the best case
// for etcd (a follower would forward them).
func (c *etcdCluster) waitLeader(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if err := ctx.Err(); err != nil {
			return err
		}
		leader, err := c.findLeader(ctx)
		if err == nil {
			c.leader = leader
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("no leader after %s: %w", timeout, last)
}

func (c *etcdCluster) findLeader(ctx context.Context) (string, error) {
	type status struct {
		Header struct {
			MemberID string `json:"member_id"`
		} `json:"header"`
		Leader string `json:"leader"`
	}
	var leader string
	leaderID := ""
	for _, u := range c.clientURLs {
		var s status
		if err := c.post(ctx, u+"/v3/maintenance/status", map[string]string{}, &s); err != nil {
			return "", err
		}
		if s.Leader == "" || s.Leader == "0" {
			return "", fmt.Errorf("%s knows no leader yet", u)
		}
		if leaderID != "" && s.Leader != leaderID {
			return "", fmt.Errorf("members disagree on the leader")
		}
		leaderID = s.Leader
		if s.Header.MemberID == s.Leader {
			leader = u
		}
	}
	if leader == "" {
		return "", errors.New("leader is not one of the members")
	}
	return leader, nil
}

// put writes key through the v3 JSON gateway (/v3/kv/put since etcd 3.4).
func (c *etcdCluster) put(ctx context.Context, key string, value []byte) error {
	body := map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString(value),
	}
	var resp struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if err := c.post(ctx, c.leader+"/v3/kv/put", body, &resp); err != nil {
		return err
	}
	if resp.Header.Revision == "" {
		return errors.New("etcd put: no revision in the response")
	}
	return nil
}

func (c *etcdCluster) post(ctx context.Context, url string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("etcd %s: %w", url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("etcd %s: read: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: %s: %s", url, resp.Status, bytes.TrimSpace(data))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("etcd %s: decode: %w", url, err)
	}
	return nil
}
