// Command pvesim serves the Proxmox VE API emulator on a loopback HTTPS
// address until interrupted.
//
//	go run ./e2e/pvesim/cmd/pvesim -nodes 3 -shared-storage -listen 127.0.0.1:8006
//
// It prints the API URL, the certificate fingerprint and the API token.
// Faults can be injected with repeatable flags:
//
//	-fault 'GET ^/nodes$ 503 2'          METHOD PATH-REGEXP STATUS [COUNT [PROBABILITY]] (METHOD * = any)
//	-fail-task 'qmclone:1:clone failed'  TYPE:COUNT:MESSAGE (COUNT 0 = always)
//	-nextid-race 2                       the next 2 /cluster/nextid calls return the same id
//	-latency 50ms                        delay every request
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/opencsp/installer/e2e/pvesim"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ", ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	if err := run(os.Args[1:], os.Stdout, sig); err != nil {
		fmt.Fprintln(os.Stderr, "pvesim:", err)
		os.Exit(1)
	}
}

var sizeRE = regexp.MustCompile(`^(\d+)([KMGT]?)$`)

func parseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	m := sizeRE.FindStringSubmatch(strings.ToUpper(s))
	if m == nil {
		return 0, fmt.Errorf("bad size %q (want e.g. 100G)", s)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2]]
	return n << shift, nil
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// run serves until stop delivers a signal.
func run(args []string, stdout io.Writer, stop <-chan os.Signal) error {
	fs := flag.NewFlagSet("pvesim", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8006", "loopback address to listen on")
	nodes := fs.Int("nodes", 1, "number of nodes (1 = standalone)")
	nodeNames := fs.String("node-names", "", "comma-separated node names")
	cluster := fs.String("cluster-name", "", "cluster name")
	version := fs.String("pve-version", "", "pve-manager version (default 9.1.2)")
	cpus := fs.Int("cpus", 0, "CPUs per node")
	memory := fs.String("memory", "", "memory per node, e.g. 64G")
	bridges := fs.String("bridges", "", "comma-separated bridges (default vmbr0)")
	dns := fs.String("dns-servers", "", "comma-separated nameservers of the nodes (cloud-init default)")
	search := fs.String("dns-search", "", "search domain of the nodes (cloud-init default)")
	localSize := fs.String("local-size", "", "size of 'local' (dir), e.g. 100G")
	lvmSize := fs.String("lvm-size", "", "size of 'local-lvm' (lvmthin), e.g. 200G")
	shared := fs.Bool("shared-storage", false, "add the shared 'shared-nfs' storage")
	sharedSize := fs.String("shared-size", "", "size of 'shared-nfs', e.g. 1T")
	tokenID := fs.String("token-id", "", "API token id USER@REALM!ID (default root@pam!pvesim)")
	tokenSecret := fs.String("token-secret", "", "API token secret")
	password := fs.String("password", "", "root@pam password for tickets (default pvesim)")
	taskDur := fs.Duration("task-duration", 200*time.Millisecond, "duration of a task's work")
	lockTimeout := fs.Duration("lock-timeout", 10*time.Second, "config lock timeout")
	agentDelay := fs.Duration("agent-delay", 0, "time from VM start until the guest agent answers")
	applianceDuration := fs.Duration("appliance-duration", 0, "how long the appliance stand-in runs when a VM boots an ISO (default 50ms)")
	applianceReboots := fs.Bool("appliance-reboots", false, "the appliance stand-in reboots instead of powering off (appliance.after: reboot)")
	latency := fs.Duration("latency", 0, "delay added to every request")
	seed := fs.Int64("seed", 0, "seed for MACs, UUIDs, PIDs and fault probabilities")
	logFile := fs.String("log", "", "request log file (JSON lines; - for stdout)")
	dataDir := fs.String("data-dir", "", "directory for uploaded/downloaded files (default: temporary)")
	external := fs.Bool("allow-external-downloads", false, "let download-url fetch non-loopback URLs")
	certOut := fs.String("cert-out", "", "write the server certificate (PEM) to this file")
	nextidRace := fs.Int("nextid-race", 0, "the next N /cluster/nextid calls return the same id")
	var faults, failTasks, addrs multiFlag
	fs.Var(&faults, "fault", "HTTP fault 'METHOD PATH-REGEXP STATUS [COUNT [PROBABILITY]]' (repeatable)")
	fs.Var(&failTasks, "fail-task", "task failure 'TYPE:COUNT:MESSAGE' (repeatable)")
	fs.Var(&addrs, "agent-address", "guest agent address 'VMID=IP[/PREFIX]' (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	opts := pvesim.Options{
		Listen: *listen, Nodes: *nodes, NodeNames: splitComma(*nodeNames), ClusterName: *cluster,
		PVEVersion: *version, CPUs: *cpus, Bridges: splitComma(*bridges),
		DNSServers: splitComma(*dns), DNSSearch: *search, SharedStorage: *shared,
		TokenID: *tokenID, TokenSecret: *tokenSecret, TaskDuration: *taskDur, LockTimeout: *lockTimeout,
		AgentDelay: *agentDelay, ApplianceDuration: *applianceDuration, ApplianceReboots: *applianceReboots, Latency: *latency, Seed: *seed, DataDir: *dataDir,
		AllowExternalDownloads: *external,
	}
	var err error
	if opts.MemoryBytes, err = parseBytes(*memory); err != nil {
		return err
	}
	if opts.LocalBytes, err = parseBytes(*localSize); err != nil {
		return err
	}
	if opts.LVMThinBytes, err = parseBytes(*lvmSize); err != nil {
		return err
	}
	if opts.SharedBytes, err = parseBytes(*sharedSize); err != nil {
		return err
	}
	if *password != "" {
		opts.Users = map[string]string{"root@pam": *password}
	}
	addrMap := map[int]string{}
	for _, a := range addrs {
		id, ip, ok := strings.Cut(a, "=")
		n, err := strconv.Atoi(id)
		if !ok || err != nil {
			return fmt.Errorf("bad -agent-address %q (want VMID=IP)", a)
		}
		addrMap[n] = ip
	}
	opts.AddressFor = func(vmid int, node string) (string, bool) {
		ip, ok := addrMap[vmid]
		return ip, ok
	}
	switch *logFile {
	case "":
	case "-":
		opts.Log = stdout
	default:
		f, err := os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		opts.Log = f
	}

	s, err := pvesim.New(opts)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, f := range faults {
		hf, err := parseFault(f)
		if err != nil {
			return err
		}
		if err := s.InjectHTTPError(hf); err != nil {
			return err
		}
	}
	for _, f := range failTasks {
		parts := strings.SplitN(f, ":", 3)
		if len(parts) != 3 {
			return fmt.Errorf("bad -fail-task %q (want TYPE:COUNT:MESSAGE)", f)
		}
		n, err := strconv.Atoi(parts[1])
		if err != nil {
			return fmt.Errorf("bad -fail-task count in %q", f)
		}
		s.FailTasks(parts[0], parts[2], n)
	}
	if *nextidRace > 0 {
		s.RaceNextID(*nextidRace)
	}
	if *certOut != "" {
		if err := os.WriteFile(*certOut, s.CertPEM(), 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "pvesim: serving %s (nodes: %s)\n", s.APIURL(), strings.Join(s.NodeNames(), ", "))
	fmt.Fprintf(stdout, "url: %s\n", s.URL())
	fmt.Fprintf(stdout, "fingerprint: %s\n", s.Fingerprint())
	fmt.Fprintf(stdout, "token: %s=%s\n", s.TokenID(), s.TokenSecret())

	<-stop
	fmt.Fprintln(stdout, "pvesim: shutting down")
	return nil
}

func parseFault(spec string) (pvesim.HTTPFault, error) {
	f := strings.Fields(spec)
	if len(f) < 3 || len(f) > 5 {
		return pvesim.HTTPFault{}, fmt.Errorf("bad -fault %q (want METHOD PATH-REGEXP STATUS [COUNT [PROBABILITY]])", spec)
	}
	hf := pvesim.HTTPFault{Method: f[0], Path: f[1]}
	if hf.Method == "*" {
		hf.Method = ""
	}
	var err error
	if hf.Status, err = strconv.Atoi(f[2]); err != nil {
		return hf, fmt.Errorf("bad -fault status in %q", spec)
	}
	if len(f) > 3 {
		if hf.Count, err = strconv.Atoi(f[3]); err != nil {
			return hf, fmt.Errorf("bad -fault count in %q", spec)
		}
	}
	if len(f) > 4 {
		if hf.Probability, err = strconv.ParseFloat(f[4], 64); err != nil {
			return hf, fmt.Errorf("bad -fault probability in %q", spec)
		}
	}
	return hf, nil
}
