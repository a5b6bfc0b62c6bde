package pvesim

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// imageServer serves test images over plain HTTP on loopback.
func imageServer(t *testing.T, files map[string][]byte) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func testSSHKey(t *testing.T) string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sk))) + " test@pvesim"
}

// encodeSSHKeys encodes keys the way PVE's urlencoded format requires.
func encodeSSHKeys(keys ...string) string {
	return strings.ReplaceAll(url.QueryEscape(strings.Join(keys, "\n")), "+", "%20")
}

func TestStandaloneFlow(t *testing.T) {
	var mu sync.Mutex
	var started, stopped []VMEvent
	s := newTestServer(t, Options{
		AddressFor: func(vmid int, node string) (string, bool) {
			if vmid == 101 && node == "pve" {
				return "10.0.0.5/24", true
			}
			return "", false
		},
		OnStart: func(ev VMEvent) error {
			mu.Lock()
			defer mu.Unlock()
			started = append(started, ev)
			return nil
		},
		OnStop: func(ev VMEvent) {
			mu.Lock()
			defer mu.Unlock()
			stopped = append(stopped, ev)
		},
	})
	c := tokenClient(t, s)
	image := append(FakeQCOW2(2<<30), make([]byte, 4096)...)
	srv := imageServer(t, map[string][]byte{"debian-12.qcow2": image, "debian-12.img": image})

	// download-url: wrong extension for import content
	r := c.do("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/debian-12.img",
		"content", "import", "filename", "debian-12.img"))
	if r.Status != 400 || r.Body["errors"].(map[string]any)["filename"] != "invalid filename or wrong extension" {
		t.Fatalf(".img import: %d %s", r.Status, r.RawBody)
	}
	// bad checksum: the task fails like PVE's
	bad := strings.Repeat("0", 64)
	upid, st := c.task("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/debian-12.qcow2",
		"content", "import", "filename", "debian-12.qcow2", "checksum", bad, "checksum-algorithm", "sha256"))
	if want := fmt.Sprintf("checksum mismatch: got '%s' != expect '%s'", sha256hex(image), bad); st != want {
		t.Fatalf("bad checksum exit %q, want %q", st, want)
	}
	if !regexp.MustCompile(`^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:download:debian-12\.qcow2:root@pam!pvesim:$`).MatchString(upid) {
		t.Errorf("UPID %s", upid)
	}
	if log := c.taskLog(upid); log[len(log)-1] != "TASK ERROR: "+st {
		t.Errorf("task log ends with %q", log[len(log)-1])
	}
	// good checksum
	upid = c.taskOK("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/debian-12.qcow2",
		"content", "import", "filename", "debian-12.qcow2", "checksum", sha256hex(image), "checksum-algorithm", "sha256"))
	if log := strings.Join(c.taskLog(upid), "\n"); !strings.Contains(log, "downloading "+srv.URL+"/debian-12.qcow2 to /var/lib/vz/import/debian-12.qcow2") ||
		!strings.Contains(log, "OK, checksum verified") {
		t.Errorf("download log:\n%s", log)
	}
	// a second download of the same file with the right checksum is a no-op; without checksum it is refused
	c.taskOK("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/debian-12.qcow2",
		"content", "import", "filename", "debian-12.qcow2", "checksum", sha256hex(image), "checksum-algorithm", "sha256"))
	if _, st := c.task("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/debian-12.qcow2",
		"content", "import", "filename", "debian-12.qcow2")); st != "refusing to override existing file '/var/lib/vz/import/debian-12.qcow2'" {
		t.Errorf("re-download without checksum: %q", st)
	}
	content := c.ok("GET", "/nodes/pve/storage/local/content", vals("content", "import")).dataList()
	if len(content) != 1 || content[0].(map[string]any)["volid"] != "local:import/debian-12.qcow2" {
		t.Fatalf("import content: %v", content)
	}
	info := c.ok("GET", "/nodes/pve/storage/local/content/"+url.PathEscape("local:import/debian-12.qcow2"), nil).dataMap()
	if info["path"] != "/var/lib/vz/import/debian-12.qcow2" || info["format"] != "qcow2" || info["size"] != float64(len(image)) {
		t.Errorf("volume info %v", info)
	}

	// template VM with an imported disk and a cloud-init drive
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "9000", "name", "debian-12-tmpl",
		"scsi0", "local-lvm:0,import-from=local:import/debian-12.qcow2,discard=on",
		"ide2", "local-lvm:cloudinit", "serial0", "socket", "vga", "serial0", "agent", "enabled=1",
		"scsihw", "virtio-scsi-single", "boot", "order=scsi0", "net0", "virtio,bridge=vmbr0",
		"tags", "template;opencsp-test", "memory", "2048", "cores", "2"))
	conf := c.ok("GET", "/nodes/pve/qemu/9000/config", nil).dataMap()
	wantConf := map[string]any{
		"scsi0": "local-lvm:vm-9000-disk-0,discard=on,size=2G", "ide2": "local-lvm:vm-9000-cloudinit,media=cdrom",
		"serial0": "socket", "vga": "serial0", "agent": "enabled=1", "scsihw": "virtio-scsi-single",
		"boot": "order=scsi0", "tags": "opencsp-test;template", "memory": "2048", "cores": float64(2),
	}
	for k, v := range wantConf {
		if conf[k] != v {
			t.Errorf("config %s = %v, want %v", k, conf[k], v)
		}
	}
	if !regexp.MustCompile(`^virtio=BC:24:11:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2},bridge=vmbr0$`).MatchString(conf["net0"].(string)) {
		t.Errorf("net0 %v", conf["net0"])
	}
	if !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(conf["digest"].(string)) {
		t.Errorf("digest %v", conf["digest"])
	}
	c.taskOK("POST", "/nodes/pve/qemu/9000/template", nil)
	conf = c.ok("GET", "/nodes/pve/qemu/9000/config", nil).dataMap()
	if conf["template"] != float64(1) || conf["scsi0"] != "local-lvm:base-9000-disk-0,discard=on,size=2G" {
		t.Fatalf("template config %v", conf)
	}
	if r := c.do("POST", "/nodes/pve/qemu/9000/template", nil); r.Status != 500 || r.Reason != "you can't convert a template to a template" {
		t.Errorf("template twice: %d %q", r.Status, r.Reason)
	}
	if _, st := c.task("POST", "/nodes/pve/qemu/9000/status/start", nil); st != "you can't start a vm if it's a template" {
		t.Errorf("start template: %q", st)
	}

	// full clone and linked clone
	c.taskOK("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "101", "name", "vm1", "full", "1"))
	c.taskOK("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "102"))
	conf = c.ok("GET", "/nodes/pve/qemu/101/config", nil).dataMap()
	if conf["name"] != "vm1" || conf["scsi0"] != "local-lvm:vm-101-disk-0,discard=on,size=2G" ||
		conf["ide2"] != "local-lvm:vm-101-cloudinit,media=cdrom" || conf["template"] != nil || conf["lock"] != nil {
		t.Fatalf("full clone config %v", conf)
	}
	tmplNet := c.ok("GET", "/nodes/pve/qemu/9000/config", nil).dataMap()["net0"]
	if conf["net0"] == tmplNet {
		t.Error("clone must get a new MAC")
	}
	linked := c.ok("GET", "/nodes/pve/qemu/102/config", nil).dataMap()
	if linked["name"] != "Copy-of-VM-debian-12-tmpl" || linked["scsi0"] != "local-lvm:base-9000-disk-0/vm-102-disk-0,discard=on,size=2G" {
		t.Fatalf("linked clone config %v", linked)
	}
	if r := c.do("POST", "/nodes/pve/qemu/101/clone", vals("newid", "103", "full", "0")); r.Status != 500 ||
		r.Reason != "Linked clone feature is not supported for drive 'scsi0'" {
		t.Errorf("linked clone of a VM: %d %q", r.Status, r.Reason)
	}
	if r := c.do("POST", "/nodes/pve/qemu/9000/clone", vals("newid", "103", "full", "0", "storage", "local")); r.Status != 500 ||
		r.Reason != "parameter 'storage' not allowed for linked clones" {
		t.Errorf("linked clone with storage: %d %q", r.Status, r.Reason)
	}

	// resize: grow only
	c.taskOK("PUT", "/nodes/pve/qemu/101/resize", vals("disk", "scsi0", "size", "+2G"))
	if got := c.ok("GET", "/nodes/pve/qemu/101/config", nil).dataMap()["scsi0"]; got != "local-lvm:vm-101-disk-0,discard=on,size=4G" {
		t.Errorf("after resize: %v", got)
	}
	if _, st := c.task("PUT", "/nodes/pve/qemu/101/resize", vals("disk", "scsi0", "size", "3G")); st != "shrinking disks is not supported" {
		t.Errorf("shrink: %q", st)
	}
	c.taskOK("PUT", "/nodes/pve/qemu/101/resize", vals("disk", "scsi0", "size", "5G"))

	// cloud-init settings
	key := testSSHKey(t)
	c.ok("PUT", "/nodes/pve/qemu/101/config", vals("ciuser", "debian", "cipassword", "s3cret",
		"sshkeys", encodeSSHKeys(key), "ipconfig0", "ip=10.0.0.5/24,gw=10.0.0.1",
		"nameserver", "10.0.0.1", "searchdomain", "example.org", "ciupgrade", "0"))
	conf = c.ok("GET", "/nodes/pve/qemu/101/config", nil).dataMap()
	if conf["cipassword"] != "**********" || conf["ciuser"] != "debian" {
		t.Errorf("cloud-init config %v", conf)
	}
	pending := map[string]map[string]any{}
	for _, e := range c.ok("GET", "/nodes/pve/qemu/101/cloudinit", nil).dataList() {
		m := e.(map[string]any)
		pending[m["key"].(string)] = m
	}
	if pending["ciuser"]["pending"] != "debian" || pending["ipconfig0"]["pending"] != "ip=10.0.0.5/24,gw=10.0.0.1" {
		t.Errorf("cloud-init pending %v", pending)
	}
	if r := c.do("PUT", "/nodes/pve/qemu/101/config", vals("sshkeys", encodeSSHKeys("ssh-rsa not-a-key"))); r.Status != 500 ||
		r.Reason != "SSH public key validation error" {
		t.Errorf("bad ssh key: %d %q", r.Status, r.Reason)
	}

	// start: hook, status, agent
	c.taskOK("POST", "/nodes/pve/qemu/101/status/start", nil)
	st101 := c.ok("GET", "/nodes/pve/qemu/101/status/current", nil).dataMap()
	if st101["status"] != "running" || st101["qmpstatus"] != "running" || st101["agent"] != float64(1) ||
		st101["name"] != "vm1" || st101["cpus"] != float64(2) || st101["maxmem"] != float64(2<<30) || st101["template"] != nil {
		t.Errorf("status %v", st101)
	}
	if _, st := c.task("POST", "/nodes/pve/qemu/101/status/start", nil); st != "VM 101 already running" {
		t.Errorf("double start: %q", st)
	}
	if r := c.ok("POST", "/nodes/pve/qemu/101/agent/ping", nil).dataMap(); r["result"] == nil {
		t.Errorf("ping %v", r)
	}
	ifaces := c.ok("GET", "/nodes/pve/qemu/101/agent/network-get-interfaces", nil).dataMap()["result"].([]any)
	if len(ifaces) != 2 || ifaces[0].(map[string]any)["name"] != "lo" {
		t.Fatalf("interfaces %v", ifaces)
	}
	eth0 := ifaces[1].(map[string]any)
	addr := eth0["ip-addresses"].([]any)[0].(map[string]any)
	if addr["ip-address"] != "10.0.0.5" || addr["prefix"] != float64(24) || addr["ip-address-type"] != "ipv4" {
		t.Errorf("eth0 %v", eth0)
	}
	mac := strings.ToLower(strings.TrimPrefix(strings.Split(conf["net0"].(string), ",")[0], "virtio="))
	if eth0["hardware-address"] != mac {
		t.Errorf("eth0 mac %v, want %s", eth0["hardware-address"], mac)
	}

	// cloud-init dump
	user := c.ok("GET", "/nodes/pve/qemu/101/cloudinit/dump", vals("type", "user")).str()
	pwLine := regexp.MustCompile(`(?m)^password: (\$5\$[./0-9A-Za-z]{8}\$[./0-9A-Za-z]{43})$`).FindStringSubmatch(user)
	if pwLine == nil {
		t.Fatalf("user-data password not hashed:\n%s", user)
	}
	wantUser := "#cloud-config\nhostname: vm1\nmanage_etc_hosts: true\nfqdn: vm1.example.org\nuser: debian\n" +
		"password: " + pwLine[1] + "\nssh_authorized_keys:\n  - " + key + "\nchpasswd:\n  expire: False\nusers:\n  - default\n"
	if user != wantUser {
		t.Errorf("user-data\n%s\nwant\n%s", user, wantUser)
	}
	if salt := strings.Split(pwLine[1], "$")[2]; sha256Crypt("s3cret", salt) != pwLine[1] {
		t.Error("password hash does not verify")
	}
	network := c.ok("GET", "/nodes/pve/qemu/101/cloudinit/dump", vals("type", "network")).str()
	wantNet := "version: 1\nconfig:\n    - type: physical\n      name: eth0\n      mac_address: '" + mac + "'\n      subnets:\n" +
		"      - type: static\n        address: '10.0.0.5'\n        netmask: '255.255.255.0'\n        gateway: '10.0.0.1'\n" +
		"    - type: nameserver\n      address:\n      - '10.0.0.1'\n      search:\n      - 'example.org'\n"
	if network != wantNet {
		t.Errorf("network-config\n%s\nwant\n%s", network, wantNet)
	}
	meta := c.ok("GET", "/nodes/pve/qemu/101/cloudinit/dump", vals("type", "meta")).str()
	sum := sha1.Sum([]byte(user + network))
	if meta != "instance-id: "+hex.EncodeToString(sum[:])+"\n" {
		t.Errorf("meta-data %q", meta)
	}
	mu.Lock()
	if len(started) != 1 || started[0].VMID != 101 || started[0].UserData != user || started[0].NetworkConfig != network ||
		started[0].MetaData != meta || started[0].Name != "vm1" || len(started[0].MACs) != 1 {
		t.Errorf("OnStart events %+v", started)
	}
	mu.Unlock()
	// after start the cloud-init image is current
	for _, e := range c.ok("GET", "/nodes/pve/qemu/101/cloudinit", nil).dataList() {
		if _, ok := e.(map[string]any)["pending"]; ok {
			t.Errorf("pending after start: %v", e)
		}
	}

	// stop and destroy
	if r := c.do("DELETE", "/nodes/pve/qemu/101", nil); r.Status != 500 || r.Reason != "VM 101 is running - destroy failed" {
		t.Errorf("destroy running: %d %q", r.Status, r.Reason)
	}
	c.taskOK("POST", "/nodes/pve/qemu/101/status/stop", nil)
	if got := c.ok("GET", "/nodes/pve/qemu/101/status/current", nil).dataMap()["status"]; got != "stopped" {
		t.Errorf("status after stop %v", got)
	}
	if r := c.do("GET", "/nodes/pve/qemu/101/agent/network-get-interfaces", nil); r.Status != 500 || r.Reason != "VM 101 is not running" {
		t.Errorf("agent of stopped VM: %d %q", r.Status, r.Reason)
	}
	mu.Lock()
	if len(stopped) != 1 || stopped[0].VMID != 101 {
		t.Errorf("OnStop events %+v", stopped)
	}
	mu.Unlock()
	c.taskOK("DELETE", "/nodes/pve/qemu/101", vals("purge", "1", "destroy-unreferenced-disks", "1"))
	if r := c.do("GET", "/nodes/pve/qemu/101/config", nil); r.Status != 500 ||
		r.Reason != "Configuration file 'nodes/pve/qemu-server/101.conf' does not exist" {
		t.Errorf("config after destroy: %d %q", r.Status, r.Reason)
	}
	vols := c.ok("GET", "/nodes/pve/storage/local-lvm/content", vals("vmid", "101")).dataList()
	if len(vols) != 0 {
		t.Errorf("volumes left after destroy: %v", vols)
	}
	// the template cannot go while its linked clone exists
	if _, st := c.task("DELETE", "/nodes/pve/qemu/9000", nil); st != "base volume 'local-lvm:base-9000-disk-0' is still in use by linked cloned" {
		t.Errorf("destroy template with linked clone: %q", st)
	}
	c.taskOK("DELETE", "/nodes/pve/qemu/102", nil)
	c.taskOK("DELETE", "/nodes/pve/qemu/9000", nil)
	if vols := c.ok("GET", "/nodes/pve/storage/local-lvm/content", nil).dataList(); len(vols) != 0 {
		t.Errorf("volumes left: %v", vols)
	}
}

func TestAgentDelayAndState(t *testing.T) {
	s := newTestServer(t, Options{AgentDelay: 150 * time.Millisecond})
	c := tokenClient(t, s)
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "agent", "1", "net0", "virtio,bridge=vmbr0"))
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "101"))
	c.taskOK("POST", "/nodes/pve/qemu/100/status/start", nil)
	c.taskOK("POST", "/nodes/pve/qemu/101/status/start", nil)
	if r := c.do("POST", "/nodes/pve/qemu/100/agent/ping", nil); r.Status != 500 || r.Reason != "QEMU guest agent is not running" {
		t.Fatalf("agent right after start: %d %q", r.Status, r.Reason)
	}
	if r := c.do("POST", "/nodes/pve/qemu/101/agent/ping", nil); r.Status != 500 || r.Reason != "No QEMU guest agent configured" {
		t.Fatalf("agent not configured: %d %q", r.Status, r.Reason)
	}
	time.Sleep(200 * time.Millisecond)
	c.ok("POST", "/nodes/pve/qemu/100/agent/ping", nil)
	// without an address from the harness eth0 has only its link-local address
	ifaces := c.ok("GET", "/nodes/pve/qemu/100/agent/network-get-interfaces", nil).dataMap()["result"].([]any)
	addrs := ifaces[1].(map[string]any)["ip-addresses"].([]any)
	if len(addrs) != 1 || !strings.HasPrefix(addrs[0].(map[string]any)["ip-address"].(string), "fe80::") {
		t.Errorf("eth0 addresses %v", addrs)
	}
	if err := s.SetAgentRunning(100, false); err != nil {
		t.Fatal(err)
	}
	if r := c.do("POST", "/nodes/pve/qemu/100/agent/ping", nil); r.Status != 500 {
		t.Errorf("agent down: %d", r.Status)
	}
}
