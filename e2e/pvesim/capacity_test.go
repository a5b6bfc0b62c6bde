package pvesim

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"io"
	"log"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func storageStatus(t *testing.T, c *client, node, sid string) map[string]any {
	t.Helper()
	return c.ok("GET", "/nodes/"+node+"/storage/"+sid+"/status", nil).dataMap()
}

func TestCapacityAccounting(t *testing.T) {
	s := newTestServer(t, Options{LVMThinBytes: 10 << 30})
	c := tokenClient(t, s)
	st := storageStatus(t, c, "pve", "local-lvm")
	if st["total"] != float64(10<<30) || st["used"] != float64(0) || st["avail"] != float64(10<<30) || st["active"] != float64(1) {
		t.Fatalf("empty storage %v", st)
	}
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "scsi0", "local-lvm:8", "ide2", "local-lvm:cloudinit"))
	st = storageStatus(t, c, "pve", "local-lvm")
	if st["used"] != float64(8<<30+4<<20) || st["avail"] != float64(2<<30-4<<20) {
		t.Errorf("after 8G disk: %v", st)
	}
	list := c.ok("GET", "/nodes/pve/storage", vals("storage", "local-lvm")).dataList()
	if f := list[0].(map[string]any)["used_fraction"].(float64); f < 0.8 || f > 0.81 {
		t.Errorf("used_fraction %v", f)
	}
	_, st2 := c.task("POST", "/nodes/pve/qemu", vals("vmid", "101", "scsi0", "local-lvm:4"))
	want := `unable to create VM 101 - lvcreate 'pve/vm-101-disk-0' error:   Volume group "pve" has insufficient free space (511 extents): 1024 required.`
	if st2 != want {
		t.Errorf("over capacity:\n got %q\nwant %q", st2, want)
	}
	if _, ok := s.VM(101); ok {
		t.Error("failed create left a VM")
	}
	if _, st := c.task("PUT", "/nodes/pve/qemu/100/resize", vals("disk", "scsi0", "size", "+4G")); !strings.Contains(st, "lvextend") {
		t.Errorf("resize over capacity: %q", st)
	}
	// allocate and free a volume through the content API
	r := c.ok("POST", "/nodes/pve/storage/local-lvm/content", vals("vmid", "100", "filename", "vm-100-disk-5", "size", "512M"))
	if r.str() != "local-lvm:vm-100-disk-5" {
		t.Fatalf("alloc %v", r.data())
	}
	if r := c.do("POST", "/nodes/pve/storage/local-lvm/content", vals("vmid", "100", "filename", "disk-x", "size", "1G")); r.Status != 500 {
		t.Errorf("bad alloc name: %d %q", r.Status, r.Reason)
	}
	used := storageStatus(t, c, "pve", "local-lvm")["used"].(float64)
	upid := c.taskOK("DELETE", "/nodes/pve/storage/local-lvm/content/vm-100-disk-5", nil)
	if !strings.Contains(upid, ":imgdel:100@local-lvm:") {
		t.Errorf("imgdel UPID %s", upid)
	}
	if after := storageStatus(t, c, "pve", "local-lvm")["used"].(float64); used-after != 512<<20 {
		t.Errorf("freed %v bytes", used-after)
	}
	c.taskOK("DELETE", "/nodes/pve/qemu/100", nil)
	if st := storageStatus(t, c, "pve", "local-lvm"); st["used"] != float64(0) {
		t.Errorf("after destroy: %v", st)
	}
}

func TestDownloadCapacityAndChecks(t *testing.T) {
	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	img := append(FakeQCOW2(1<<30), make([]byte, 1<<20)...)
	srv := imageServer(t, map[string][]byte{"a.qcow2": img, "b.qcow2": img, "notqcow.qcow2": []byte("plain bytes"), "x.raw": []byte("raw")})
	total, used, _, _ := s.StorageUsage("pve", "local")
	s.SetStorageCapacity("pve", "local", used+512<<10)
	if _, st := c.task("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/a.qcow2", "content", "import", "filename", "a.qcow2")); !strings.HasPrefix(st, "download failed: command 'wget") {
		t.Errorf("download over capacity: %q", st)
	}
	s.SetStorageCapacity("pve", "local", total)
	c.taskOK("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/a.qcow2", "content", "import", "filename", "a.qcow2"))
	_, after, _, _ := s.StorageUsage("pve", "local")
	if after-used != int64(len(img)) {
		t.Errorf("download used %d bytes, want %d", after-used, len(img))
	}
	// the content check of untrusted images
	if _, st := c.task("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/notqcow.qcow2", "content", "import", "filename", "notqcow.qcow2")); !strings.Contains(st, "Image is not in qcow2 format") {
		t.Errorf("fake qcow2: %q", st)
	}
	c.taskOK("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/x.raw", "content", "import", "filename", "x.raw"))
	// HTTP errors fail like wget
	if _, st := c.task("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/missing.qcow2", "content", "import", "filename", "m.qcow2")); !strings.HasSuffix(st, "failed: exit code 8") {
		t.Errorf("404 download: %q", st)
	}
	// storages without import content or without a path
	if r := c.do("POST", "/nodes/pve/storage/local-lvm/download-url", vals("url", srv.URL+"/a.qcow2", "content", "import", "filename", "a.qcow2")); r.Status != 500 ||
		r.Reason != "can't upload to storage type 'lvmthin', not a file based storage!" {
		t.Errorf("download to lvmthin: %d %q", r.Status, r.Reason)
	}
	// nothing leaves the loopback
	if _, st := c.task("POST", "/nodes/pve/storage/local/download-url", vals("url", "http://192.0.2.1/a.qcow2", "content", "import", "filename", "z.qcow2")); !strings.HasPrefix(st, "download failed") {
		t.Errorf("external download: %q", st)
	}
	// all algorithms
	for _, algo := range []string{"md5", "sha1", "sha224", "sha256", "sha384", "sha512"} {
		sum, _ := fileHashBytes(algo, img)
		c.taskOK("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/b.qcow2", "content", "import",
			"filename", "b-"+algo+".qcow2", "checksum", strings.ToUpper(sum), "checksum-algorithm", algo))
	}
	// import-from uses the qcow2 virtual size
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "scsi0", "local-lvm:0,import-from=local:import/a.qcow2"))
	if info, _ := s.VM(100); info.Config["scsi0"] != "local-lvm:vm-100-disk-0,size=1G" {
		t.Errorf("imported disk %v", info.Config["scsi0"])
	}
	for _, tc := range []struct{ scsi0, key, msg string }{
		{"local-lvm:4,import-from=local:import/a.qcow2", "scsi0", "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"},
		{"local-lvm:0,import-from=local:iso/x.iso", "scsi0", "local:iso/x.iso has wrong type 'iso' - needs to be 'images' or 'import'"},
	} {
		r := c.do("POST", "/nodes/pve/qemu", vals("vmid", "101", "scsi0", tc.scsi0))
		if r.Status != 400 || r.Body["errors"].(map[string]any)[tc.key] != tc.msg {
			t.Errorf("%s: %d %s", tc.scsi0, r.Status, r.RawBody)
		}
	}
	if _, st := c.task("POST", "/nodes/pve/qemu", vals("vmid", "101", "scsi0", "local-lvm:0,import-from=local:import/gone.qcow2")); st != "unable to create VM 101 - cannot import from 'local:import/gone.qcow2' - volume 'local:import/gone.qcow2' does not exist" {
		t.Errorf("import of a missing image: %q", st)
	}
}

func fileHashBytes(algo string, b []byte) (string, error) {
	h, err := newHash(algo)
	if err != nil {
		return "", err
	}
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil)), nil
}

func uploadRequest(t *testing.T, s *Server, path string, fields map[string]string, name string, data []byte) *http.Request {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for k, v := range fields {
		w.WriteField(k, v)
	}
	fw, _ := w.CreateFormFile("filename", name)
	io.Copy(fw, bytes.NewReader(data))
	w.Close()
	req, err := http.NewRequest("POST", s.APIURL()+path, &buf)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", w.FormDataContentType())
	return req
}

func TestUpload(t *testing.T) {
	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	img := FakeQCOW2(3 << 30)
	sum, _ := fileHashBytes("sha256", img)
	r := c.send(uploadRequest(t, s, "/nodes/pve/storage/local/upload",
		map[string]string{"content": "import", "checksum": sum, "checksum-algorithm": "sha256"}, "up.qcow2", img))
	if r.Status != 200 {
		t.Fatalf("upload: %d %s", r.Status, r.RawBody)
	}
	upid := r.str()
	if !strings.Contains(upid, ":imgcopy::root@pam!pvesim:") {
		t.Errorf("UPID %s", upid)
	}
	if st := c.wait(upid); st != "OK" {
		t.Fatalf("upload task %s", st)
	}
	log := strings.Join(c.taskLog(upid), "\n")
	if !strings.Contains(log, "target file: /var/lib/vz/import/up.qcow2") || !strings.Contains(log, "finished file import successfully") {
		t.Errorf("upload log\n%s", log)
	}
	c.taskOK("POST", "/nodes/pve/qemu", vals("vmid", "100", "scsi0", "local-lvm:0,import-from=local:import/up.qcow2"))
	if info, _ := s.VM(100); info.Config["scsi0"] != "local-lvm:vm-100-disk-0,size=3G" {
		t.Errorf("imported %v", info.Config["scsi0"])
	}
	// wrong checksum
	r = c.send(uploadRequest(t, s, "/nodes/pve/storage/local/upload",
		map[string]string{"content": "import", "checksum": strings.Repeat("a", 64), "checksum-algorithm": "sha256"}, "up2.qcow2", img))
	if st := c.wait(r.str()); !strings.HasPrefix(st, "checksum mismatch: got '"+sum+"'") {
		t.Errorf("upload bad checksum: %q", st)
	}
	// names and content types
	for _, tc := range []struct {
		content, name string
		key, msg      string
	}{
		{"import", "disk.img", "filename", "invalid filename or wrong extension"},
		{"iso", "disk.qcow2", "filename", "wrong file extension"},
		{"images", "disk.raw", "content", "value 'images' does not have a value in the enumeration 'iso, vztmpl, import'"},
	} {
		r := c.send(uploadRequest(t, s, "/nodes/pve/storage/local/upload", map[string]string{"content": tc.content}, tc.name, img))
		if r.Status != 400 || r.Body["errors"].(map[string]any)[tc.key] != tc.msg {
			t.Errorf("%s %s: %d %s", tc.content, tc.name, r.Status, r.RawBody)
		}
	}
	// names are normalized
	r = c.send(uploadRequest(t, s, "/nodes/pve/storage/local/upload", map[string]string{"content": "iso"}, "my disk (1).iso", []byte("iso")))
	c.wait(r.str())
	if vols := s.Volumes("pve", "local"); !contains(vols, "local:iso/my_disk__1_.iso") {
		t.Errorf("normalized name missing: %v", vols)
	}
	// uploads bypass CSRF with tickets, but need multipart
	d := login(t, s, "root@pam", "pvesim").dataMap()
	tc := &client{t: t, s: s, hc: s.Client(), header: http.Header{}}
	tc.header.Set("Cookie", "PVEAuthCookie="+url.QueryEscape(d["ticket"].(string)))
	if r := tc.send(uploadRequest(t, s, "/nodes/pve/storage/local/upload", map[string]string{"content": "iso"}, "t.iso", []byte("x"))); r.Status != 200 {
		t.Errorf("ticket upload without CSRF: %d %q", r.Status, r.Reason)
	}
	if r := c.do("POST", "/nodes/pve/storage/local/upload", vals("content", "iso", "filename", "a.iso")); r.Status != 501 {
		t.Errorf("non-multipart upload: %d %q", r.Status, r.Reason)
	}
}

func TestDownloadHTTPS(t *testing.T) {
	img := FakeQCOW2(1 << 30)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(img) }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())

	s := newTestServer(t, Options{})
	c := tokenClient(t, s)
	if _, st := c.task("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/a.qcow2", "content", "import", "filename", "a.qcow2")); !strings.HasSuffix(st, "failed: exit code 5") {
		t.Errorf("untrusted certificate: %q", st)
	}
	c.taskOK("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/a.qcow2", "content", "import",
		"filename", "a.qcow2", "verify-certificates", "0"))

	s2 := newTestServer(t, Options{DownloadRootCAs: pool})
	c2 := tokenClient(t, s2)
	c2.taskOK("POST", "/nodes/pve/storage/local/download-url", vals("url", srv.URL+"/a.qcow2", "content", "import", "filename", "a.qcow2"))
}
