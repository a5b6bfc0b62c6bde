package pvesim

import (
	"context"
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
)

// TestGoProxmoxClient drives the emulator with the client the installer
// uses: its requests must pass the schema validation and its decoding must
// work on the emulator's answers.
func TestGoProxmoxClient(t *testing.T) {
	s := newTestServer(t, Options{Nodes: 2, SharedStorage: true,
		AddressFor: func(vmid int, node string) (string, bool) { return "10.1.2.3", true }})
	ctx := context.Background()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.CertPool()}}}
	c := proxmox.NewClient(s.APIURL(), proxmox.WithHTTPClient(hc), proxmox.WithAPIToken(s.TokenID(), s.TokenSecret()))

	v, err := c.Version(ctx)
	if err != nil || v.Release != "9.1" || v.Version != "9.1.2" || v.RepoID == "" {
		t.Fatalf("Version: %+v %v", v, err)
	}
	nodes, err := c.Nodes(ctx)
	if err != nil || len(nodes) != 2 || nodes[0].Node != "pve1" || nodes[0].Status != "online" || nodes[0].MaxMem == 0 || nodes[0].SSLFingerprint != s.Fingerprint() {
		t.Fatalf("Nodes: %+v %v", nodes, err)
	}
	node, err := c.Node(ctx, "pve1")
	if err != nil || !strings.HasPrefix(node.PVEVersion, "pve-manager/9.1.2/") || node.CPUInfo.CPUs != 8 || node.Memory.Total == 0 {
		t.Fatalf("Node: %+v %v", node, err)
	}
	storages, err := node.Storages(ctx)
	if err != nil || len(storages) != 3 {
		t.Fatalf("Storages: %+v %v", storages, err)
	}
	for _, st := range storages {
		if st.Total == 0 || st.Active != 1 || st.Enabled != 1 {
			t.Errorf("storage %+v", st)
		}
	}
	if st, err := node.Storage(ctx, "shared-nfs"); err != nil || st.Shared != 1 || st.Type != "nfs" {
		t.Errorf("Storage: %+v %v", st, err)
	}
	cluster, err := c.Cluster(ctx)
	if err != nil || cluster.Quorate != 1 || len(cluster.Nodes) != 2 || cluster.Name != "pvesim" {
		t.Fatalf("Cluster: %+v %v", cluster, err)
	}
	rs, err := cluster.Resources(ctx, "node")
	if err != nil || len(rs) != 2 || rs[0].MaxCPU != 8 {
		t.Fatalf("Resources(node): %+v %v", rs, err)
	}
	id, err := cluster.NextID(ctx)
	if err != nil || id != 100 {
		t.Fatalf("NextID: %d %v", id, err)
	}

	key := testSSHKey(t)
	task, err := node.NewVirtualMachine(ctx, id,
		proxmox.VirtualMachineOption{Name: "name", Value: "gp-tmpl"},
		proxmox.VirtualMachineOption{Name: "memory", Value: 2048},
		proxmox.VirtualMachineOption{Name: "cores", Value: 2},
		proxmox.VirtualMachineOption{Name: "scsihw", Value: "virtio-scsi-single"},
		proxmox.VirtualMachineOption{Name: "scsi0", Value: "shared-nfs:1"},
		proxmox.VirtualMachineOption{Name: "ide2", Value: "shared-nfs:cloudinit"},
		proxmox.VirtualMachineOption{Name: "net0", Value: "virtio,bridge=vmbr0"},
		proxmox.VirtualMachineOption{Name: "agent", Value: "enabled=1"},
		proxmox.VirtualMachineOption{Name: "serial0", Value: "socket"},
		proxmox.VirtualMachineOption{Name: "vga", Value: "serial0"},
		proxmox.VirtualMachineOption{Name: "ciuser", Value: "debian"},
		proxmox.VirtualMachineOption{Name: "sshkeys", Value: proxmox.EncodeSSHKeys(key)},
		proxmox.VirtualMachineOption{Name: "ipconfig0", Value: "ip=dhcp"},
		proxmox.VirtualMachineOption{Name: "tags", Value: "opencsp-test"},
		proxmox.VirtualMachineOption{Name: "onboot", Value: 1},
	)
	if err != nil {
		t.Fatalf("NewVirtualMachine: %v", err)
	}
	if err := task.Wait(ctx, 10*time.Millisecond, 5*time.Second); err != nil || !task.IsSuccessful || task.ExitStatus != "OK" {
		t.Fatalf("create task: %+v %v", task, err)
	}
	// A blank disk boots no OS (and no guest agent): write one, as an
	// image import would have.
	s.mu.Lock()
	if vol, aerr := s.findVolume("pve1", "shared-nfs:100/vm-100-disk-0.raw"); aerr == nil {
		vol.blank = false
	}
	s.mu.Unlock()
	vm, err := node.VirtualMachine(ctx, id)
	if err != nil {
		t.Fatalf("VirtualMachine: %v", err)
	}
	cfg := vm.VirtualMachineConfig
	if vm.Name != "gp-tmpl" || vm.Status != "stopped" || bool(vm.Template) || cfg.Cores == nil || *cfg.Cores != 2 ||
		cfg.Memory != 2048 || cfg.Tags != "opencsp-test" || !bool(cfg.OnBoot) || cfg.SCSIs["scsi0"] != "shared-nfs:100/vm-100-disk-0.raw,size=1G" {
		t.Fatalf("VM %+v config %+v", vm, cfg)
	}
	if vms, err := node.VirtualMachines(ctx); err != nil || len(vms) != 1 || uint64(vms[0].VMID) != 100 {
		t.Fatalf("VirtualMachines: %+v %v", vms, err)
	}

	task, err = vm.ConvertToTemplate(ctx)
	if err != nil || task.Wait(ctx, 10*time.Millisecond, 5*time.Second) != nil || !task.IsSuccessful {
		t.Fatalf("ConvertToTemplate: %+v %v", task, err)
	}
	vm, _ = node.VirtualMachine(ctx, id)
	if !bool(vm.Template) || !bool(vm.VirtualMachineConfig.Template) {
		t.Errorf("template flags: status %v config %v", vm.Template, vm.VirtualMachineConfig.Template)
	}
	newid, task, err := vm.Clone(ctx, &proxmox.VirtualMachineCloneOptions{Name: "gp-vm", Full: true, Target: "pve2"})
	if err != nil || newid != 101 {
		t.Fatalf("Clone: %d %v", newid, err)
	}
	if err := task.Wait(ctx, 10*time.Millisecond, 5*time.Second); err != nil || !task.IsSuccessful {
		t.Fatalf("clone task: %+v %v", task, err)
	}
	node2, _ := c.Node(ctx, "pve2")
	clone, err := node2.VirtualMachine(ctx, newid)
	if err != nil || clone.Name != "gp-vm" {
		t.Fatalf("clone on pve2: %+v %v", clone, err)
	}
	if task, err = clone.ResizeDisk(ctx, "scsi0", "+1G"); err != nil || task.Wait(ctx, 10*time.Millisecond, 5*time.Second) != nil || !task.IsSuccessful {
		t.Fatalf("ResizeDisk: %+v %v", task, err)
	}
	if task, err = clone.Config(ctx, proxmox.VirtualMachineOption{Name: "ipconfig0", Value: "ip=10.1.2.3/24,gw=10.1.2.1"}); err != nil ||
		task.Wait(ctx, 10*time.Millisecond, 5*time.Second) != nil || !task.IsSuccessful {
		t.Fatalf("Config: %+v %v", task, err)
	}
	if pend, err := clone.CloudInitPending(ctx); err != nil || len(pend) == 0 {
		t.Fatalf("CloudInitPending: %+v %v", pend, err)
	}
	if task, err = clone.Start(ctx); err != nil || task.Wait(ctx, 10*time.Millisecond, 5*time.Second) != nil || !task.IsSuccessful {
		t.Fatalf("Start: %+v %v", task, err)
	}
	if err := clone.Ping(ctx); err != nil || !clone.IsRunning() || !bool(clone.Agent) {
		t.Fatalf("Ping: %+v %v", clone, err)
	}
	ifaces, err := clone.AgentGetNetworkIFaces(ctx)
	if err != nil || len(ifaces) != 1 || ifaces[0].IPAddresses[0].IPAddress != "10.1.2.3" {
		t.Fatalf("AgentGetNetworkIFaces: %+v %v", ifaces, err)
	}
	user, err := clone.CloudInitDump(ctx, "user")
	if err != nil || !strings.Contains(user, "  - "+key+"\n") || !strings.Contains(user, "hostname: gp-vm\n") {
		t.Fatalf("CloudInitDump: %q %v", user, err)
	}
	if err := clone.CloudInitRegenerate(ctx); err != nil {
		t.Fatalf("CloudInitRegenerate: %v", err)
	}
	rs, err = cluster.Resources(ctx, "vm")
	if err != nil || len(rs) != 2 {
		t.Fatalf("Resources(vm): %+v %v", rs, err)
	}

	// errors surface the PVE reason
	_, err = node.NewVirtualMachine(ctx, 100)
	if err == nil || err.Error() != "500 unable to create VM 100 - VM 100 already exists on node 'pve1'" {
		t.Errorf("duplicate create: %v", err)
	}
	_, err = node.NewVirtualMachine(ctx, 102, proxmox.VirtualMachineOption{Name: "cores", Value: "many"})
	if err == nil || !strings.Contains(err.Error(), "400 Parameter verification failed.") || !strings.Contains(err.Error(), "type check ('integer') failed - got 'many'") {
		t.Errorf("invalid create: %v", err)
	}
	s.FailTasks("qmstop", "VM quit/powerdown failed - got timeout", 1)
	task, _ = clone.Stop(ctx)
	if err := task.Wait(ctx, 10*time.Millisecond, 5*time.Second); err != nil || !task.IsFailed || task.ExitStatus != "VM quit/powerdown failed - got timeout" {
		t.Errorf("failed task: %+v %v", task, err)
	}
	task, _ = clone.Stop(ctx)
	task.Wait(ctx, 10*time.Millisecond, 5*time.Second)
	if task, err = clone.Delete(ctx, &proxmox.VirtualMachineDeleteOptions{Purge: true}); err != nil ||
		task.Wait(ctx, 10*time.Millisecond, 5*time.Second) != nil || !task.IsSuccessful {
		t.Fatalf("Delete: %+v %v", task, err)
	}

	// ticket authentication with CSRF on writes
	tc := proxmox.NewClient(s.APIURL(), proxmox.WithHTTPClient(hc),
		proxmox.WithCredentials(&proxmox.Credentials{Username: "root@pam", Password: "pvesim"}))
	if _, err := tc.Version(ctx); err != nil {
		t.Fatalf("ticket Version: %v", err)
	}
	tnode, _ := tc.Node(ctx, "pve1")
	if task, err := tnode.NewVirtualMachine(ctx, 150); err != nil || task.Wait(ctx, 10*time.Millisecond, 5*time.Second) != nil || !task.IsSuccessful {
		t.Fatalf("ticket create: %+v %v", task, err)
	}

	// go-proxmox quirk: only 500/501 (and 400/401/403) are errors; a 503
	// answer decodes as success with empty data
	s.InjectHTTPError(HTTPFault{Method: "GET", Path: "^/version$", Status: 503, Count: 1})
	if v, err := c.Version(ctx); err != nil || v != nil && v.Version != "" {
		t.Errorf("503 with go-proxmox: %+v %v (quirk changed?)", v, err)
	}

	// every request go-proxmox made passes the schema facts (the two
	// deliberate bad requests above are the only exceptions)
	err = s.ValidateLog()
	if err == nil || strings.Count(err.Error(), "\n") != 0 || !strings.Contains(err.Error(), "cores: type check") {
		t.Errorf("ValidateLog: %v", err)
	}
}
