package bpf

// The C programs are compiled by bpf2go into the *_bpfel.go and *_bpfel.o
// files next to them; both are committed so that building needs no clang.
// `make generate` (go generate ./bpf/...) rebuilds them.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" lxc lxc.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" overlay overlay.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -tags linux -target bpfel -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" underlay underlay.c
