package pvesim

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

var (
	safeCharRE    = regexp.MustCompile(`[^a-zA-Z0-9\-.+=_]`)
	isoExtRE      = regexp.MustCompile(`(?i)[^/]+\.(?:iso|img)$`)
	vztmplExtRE   = regexp.MustCompile(`[^/]+\.(tar\.(?:gz|xz|zst|bz2)|tgz)$`)
	importExtRE   = regexp.MustCompile(`[a-zA-Z0-9\-.+=_]+\.(ova|qcow2|raw|vmdk)$`)
	volnameVMIDRE = regexp.MustCompile(`^(vm|base)-(\d+)-`)
)

// normalizeContentFilename mirrors PVE::Storage::normalize_content_filename.
func normalizeContentFilename(name string) string {
	name = strings.TrimRight(name, "\n")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	return safeCharRE.ReplaceAllString(name, "_")
}

func (s *Server) storageEntry(in *storeInst, withFormat bool) map[string]any {
	e := map[string]any{
		"storage": in.cfg.id, "type": in.cfg.typ, "content": contentString(in.cfg.content),
		"shared": b2i(in.cfg.shared), "enabled": b2i(!in.cfg.disabled), "active": 0,
		"total": 0, "used": 0, "avail": 0,
	}
	if !in.cfg.disabled && in.active {
		e["active"] = 1
		e["total"] = in.total
		e["used"] = in.used()
		e["avail"] = in.avail()
		if in.total > 0 {
			e["used_fraction"] = float64(in.used()) / float64(in.total)
		}
	}
	if withFormat {
		supported := []string{"qcow2", "raw", "vmdk"}
		if in.cfg.typ == "lvmthin" {
			supported = []string{"raw"}
		}
		e["formats"] = map[string]any{"supported": supported, "default": "raw"}
		e["format"] = []any{map[string]int{"raw": 1, "qcow2": b2i(in.cfg.typ != "lvmthin"), "vmdk": b2i(in.cfg.typ != "lvmthin")}, "raw"}
	}
	return e
}

func handleStorageList(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	nodeName := rc.str("node")
	target := rc.str("target")
	if target == nodeName || target == "localhost" {
		target = ""
	}
	if rc.has("storage") && s.inst(nodeName, rc.str("storage")) == nil {
		return nil, paramErr1("storage", "No such storage.")
	}
	want := splitList(rc.str("content"))
	out := []any{}
	ids := make([]string, 0, len(s.stores))
	for _, c := range s.stores {
		ids = append(ids, c.id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		in := s.inst(nodeName, id)
		if in == nil {
			continue
		}
		if rc.has("storage") && rc.str("storage") != id {
			continue
		}
		if rc.bool("enabled", false) && in.cfg.disabled {
			continue
		}
		if len(want) > 0 {
			any := false
			for _, c := range want {
				if in.cfg.content[c] {
					any = true
				}
			}
			if !any {
				continue
			}
		}
		if target != "" {
			if !in.cfg.shared || s.inst(target, id) == nil {
				continue
			}
		}
		out = append(out, s.storageEntry(in, rc.bool("format", false)))
	}
	return out, nil
}

func handleStorageStatus(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.inst(rc.str("node"), rc.str("storage"))
	if in == nil {
		return nil, paramErr1("storage", "No such storage.")
	}
	e := s.storageEntry(in, false)
	delete(e, "storage")
	delete(e, "used_fraction")
	return e, nil
}

func (s *Server) volumeEntry(v *volume) map[string]any {
	e := map[string]any{
		"volid": v.volid(), "content": v.content, "format": v.format, "size": v.size, "ctime": v.ctime,
	}
	if v.vmid != 0 {
		e["vmid"] = v.vmid
	}
	if v.content == "images" || v.content == "rootdir" {
		e["used"] = v.allocated()
	}
	if v.parent != "" {
		e["parent"] = v.parent
	}
	return e
}

func handleContentList(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, aerr := s.checkStorage(rc.str("node"), rc.str("storage"), true)
	if aerr != nil {
		return nil, aerr
	}
	ct := rc.str("content")
	vmid := rc.int("vmid", 0)
	names := make([]string, 0, len(in.vols))
	for n := range in.vols {
		names = append(names, n)
	}
	sort.Strings(names)
	out := []any{}
	for _, n := range names {
		v := in.vols[n]
		if ct != "" && v.content != ct {
			continue
		}
		if vmid != 0 && v.vmid != vmid {
			continue
		}
		out = append(out, s.volumeEntry(v))
	}
	return out, nil
}

func handleContentAlloc(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, aerr := s.checkStorage(rc.str("node"), rc.str("storage"), true)
	if aerr != nil {
		return nil, aerr
	}
	name := rc.str("filename")
	vmid := rc.int("vmid", 0)
	sizestr := rc.str("size")
	var kb int64
	switch {
	case isDigits(sizestr):
		fmt.Sscan(sizestr, &kb)
	case strings.HasSuffix(sizestr, "M"):
		fmt.Sscan(strings.TrimSuffix(sizestr, "M"), &kb)
		kb *= 1024
	case strings.HasSuffix(sizestr, "G"):
		fmt.Sscan(strings.TrimSuffix(sizestr, "G"), &kb)
		kb *= 1024 * 1024
	default:
		return nil, paramErr1("size", fmt.Sprintf("unable to parse size '%s'", sizestr))
	}
	format := rc.str("format")
	if m := regexp.MustCompile(`\.(raw|qcow2|vmdk)$`).FindStringSubmatch(name); m != nil {
		if format == "" {
			format = m[1]
		} else if format != m[1] {
			return nil, paramErr1("format", fmt.Sprintf("different storage formats (%s != %s)", format, m[1]))
		}
		name = strings.TrimSuffix(name, "."+m[1])
	}
	if format == "" {
		format = defaultFormat(in)
	}
	if m := volnameVMIDRE.FindStringSubmatch(name); m == nil || m[2] != fmtVMID(vmid) {
		return nil, errf("illegal name '%s' - should be 'vm-%d-*'", name, vmid)
	}
	if !in.cfg.content["images"] && !in.cfg.content["rootdir"] {
		return nil, errf("storage '%s' does not support vm images", in.cfg.id)
	}
	if in.cfg.typ == "lvmthin" && format != "raw" {
		return nil, errf("unsupported format '%s'", format)
	}
	volname := s.imageName(in, vmid, name, format)
	v, aerr := s.allocVolume(in, volname, format, "images", vmid, kb*1024)
	if aerr != nil {
		return nil, aerr
	}
	return v.volid(), nil
}

// resolveVolid mirrors parse_volname_or_id: a full volid or a volname on storage.
func resolveVolid(volume, storage string) string {
	if strings.Contains(volume, ":") {
		return volume
	}
	return storage + ":" + volume
}

func handleVolumeInfo(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	volid := resolveVolid(rc.str("volume"), rc.str("storage"))
	sid, _, _ := strings.Cut(volid, ":")
	if _, aerr := s.checkStorage(rc.str("node"), sid, true); aerr != nil {
		return nil, aerr
	}
	v, aerr := s.findVolume(rc.str("node"), volid)
	if aerr != nil {
		return nil, aerr
	}
	return map[string]any{
		"path": s.volPath(v.inst, v.name), "size": v.size, "used": v.allocated(), "format": v.format,
	}, nil
}

func handleVolumeDelete(s *Server, rc *reqCtx) (any, error) {
	nodeName := rc.str("node")
	volid := resolveVolid(rc.str("volume"), rc.str("storage"))
	sid, volname, _ := strings.Cut(volid, ":")
	s.mu.Lock()
	if _, aerr := s.checkStorage(nodeName, sid, true); aerr != nil {
		s.mu.Unlock()
		return nil, aerr
	}
	s.mu.Unlock()
	id := sid
	if owner := volumeOwner(volname); owner != 0 {
		id = fmt.Sprintf("%d@%s", owner, sid)
	}
	upid := s.startTask(nodeName, "imgdel", id, rc.authID, func(tc *taskCtx) error {
		if err := tc.work(); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		v, aerr := s.findVolume(nodeName, volid)
		if aerr != nil {
			return aerr
		}
		if v.base {
			for _, other := range v.inst.vols {
				if other.parent == v.name {
					return fmt.Errorf("base volume '%s' is still in use by linked cloned", volid)
				}
			}
		}
		s.freeVolume(v)
		if v.inst.cfg.typ == "lvmthin" {
			tc.t.lines = append(tc.t.lines, fmt.Sprintf("  Logical volume \"%s\" successfully removed.", volname))
		}
		tc.t.lines = append(tc.t.lines, fmt.Sprintf("Removed volume '%s'", volid))
		return nil
	})
	if rc.has("delay") {
		if st, err := s.WaitTask(string(upid), time.Duration(rc.int("delay", 0))*time.Second); err == nil {
			if st == "OK" || strings.HasPrefix(st, "WARNINGS") {
				return nil, nil
			}
			return nil, errf("%s", st)
		}
	}
	return upid, nil
}

// uploadedFile is the file part of a multipart upload, streamed to disk.
type uploadedFile struct {
	path  string
	name  string
	size  int64
	taken bool
}

func (u *uploadedFile) cleanup() {
	if u != nil && !u.taken && u.path != "" {
		os.Remove(u.path)
	}
}

// receiveUpload streams a multipart/form-data upload: the part named
// "filename" goes to a temporary file, other parts are form fields.
func (s *Server) receiveUpload(r *http.Request) (*uploadedFile, map[string]string, error) {
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, nil, err
	}
	fields := map[string]string{}
	var up *uploadedFile
	postSize := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			up.cleanup()
			return nil, nil, fmt.Errorf("upload failed")
		}
		name := part.FormName()
		if name == "" {
			part.Close()
			up.cleanup()
			return nil, nil, fmt.Errorf("upload failed")
		}
		if fn := part.FileName(); fn != "" || isFilePart(part) {
			if name != "filename" || up != nil {
				part.Close()
				up.cleanup()
				return nil, nil, fmt.Errorf("upload failed")
			}
			dir := filepath.Join(s.opts.DataDir, "tmp")
			os.MkdirAll(dir, 0o700)
			f, err := os.CreateTemp(dir, "pveupload-")
			if err != nil {
				return nil, nil, err
			}
			n, err := io.Copy(f, part)
			f.Close()
			up = &uploadedFile{path: f.Name(), name: fn, size: n}
			if err != nil {
				up.cleanup()
				return nil, nil, fmt.Errorf("upload failed")
			}
			continue
		}
		b, err := io.ReadAll(io.LimitReader(part, maxPostSize))
		if err != nil {
			up.cleanup()
			return nil, nil, fmt.Errorf("upload failed")
		}
		postSize += len(b)
		if postSize >= maxPostSize {
			up.cleanup()
			return nil, nil, fmt.Errorf("upload failed")
		}
		fields[name] = string(b)
	}
	if up == nil {
		return nil, nil, fmt.Errorf("upload failed")
	}
	fields["filename"] = up.name
	return up, fields, nil
}

func isFilePart(p *multipart.Part) bool {
	_, params, _ := parseCD(p.Header.Get("Content-Disposition"))
	_, ok := params["filename"]
	return ok
}

func parseCD(h string) (string, map[string]string, error) {
	parts := strings.Split(h, ";")
	params := map[string]string{}
	for _, p := range parts[1:] {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok {
			params[strings.ToLower(k)] = strings.Trim(v, `"`)
		}
	}
	return strings.TrimSpace(parts[0]), params, nil
}

// checkImportName applies the upload/download filename rules per content.
func checkImportName(content, filename string) (format string, aerr *apiError) {
	switch content {
	case "iso":
		if !isoExtRE.MatchString(filename) {
			return "", paramErr1("filename", "wrong file extension")
		}
		return "iso", nil
	case "vztmpl":
		if !vztmplExtRE.MatchString(filename) {
			return "", paramErr1("filename", "wrong file extension")
		}
		return "tgz", nil
	case "import":
		m := importExtRE.FindStringSubmatch(filename)
		if m == nil {
			return "", paramErr1("filename", "invalid filename or wrong extension")
		}
		return m[1], nil
	}
	return "", paramErr1("content", fmt.Sprintf("upload content type '%s' not allowed", content))
}

func contentDir(content string) string {
	switch content {
	case "iso":
		return "iso"
	case "vztmpl":
		return "vztmpl"
	}
	return "import"
}

// storeFile registers a file as a volume (replacing an existing one) with
// capacity accounting; the file is moved into the data dir.
func (s *Server) storeFile(in *storeInst, content, filename, format, src string, size int64) (*volume, error) {
	volname := contentDir(content) + "/" + filename
	old := in.vols[volname]
	free := in.avail()
	if old != nil {
		free += old.size
	}
	vsize := size
	if format == "qcow2" {
		if vs, ok := qcow2VirtualSize(src); ok {
			vsize = vs
		}
	}
	if size > free {
		return nil, fmt.Errorf("error writing '%s': No space left on device", s.volPath(in, volname))
	}
	dir := filepath.Join(s.opts.DataDir, "storage", in.node, in.cfg.id, contentDir(content))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	dst := filepath.Join(dir, filename)
	if err := os.Rename(src, dst); err != nil {
		return nil, err
	}
	if old != nil {
		delete(in.vols, volname)
	}
	fmtName := format
	if content == "iso" {
		fmtName = "iso"
	}
	if content == "vztmpl" {
		fmtName = "tgz"
	}
	v := &volume{inst: in, name: volname, format: fmtName, size: size, content: content,
		ctime: time.Now().Unix(), file: dst}
	if content == "import" && vsize != size {
		v.virtual = vsize
	}
	in.vols[volname] = v
	return v, nil
}

// checkImageFile mirrors the untrusted image checks of upload/download-url.
func (s *Server) checkImageFile(path, format string) error {
	if s.opts.DisableImageChecks {
		return nil
	}
	switch format {
	case "qcow2":
		if _, ok := qcow2VirtualSize(path); !ok {
			return fmt.Errorf("qemu-img: Could not open '%s': Image is not in qcow2 format", path)
		}
	case "vmdk":
		if !isVMDK(path) {
			return fmt.Errorf("qemu-img: Could not open '%s': Image is not in vmdk format", path)
		}
	case "ova":
		if !ovaHasOVF(path) {
			return errors.New("ova archive has no .ovf file inside")
		}
	}
	return nil
}

func handleUpload(s *Server, rc *reqCtx) (any, error) {
	nodeName, sid := rc.str("node"), rc.str("storage")
	s.mu.Lock()
	in, aerr := s.checkStorage(nodeName, sid, false)
	if aerr == nil && in.cfg.path == "" {
		aerr = errf("can't upload to storage type '%s'", in.cfg.typ)
	}
	s.mu.Unlock()
	if aerr != nil {
		return nil, aerr
	}
	up := rc.upload
	if up == nil {
		return nil, errf("missing temporary file name")
	}
	content := rc.str("content")
	filename := normalizeContentFilename(rc.str("filename"))
	format, aerr := checkImportName(content, filename)
	if aerr != nil {
		return nil, aerr
	}
	if !in.cfg.content[content] {
		return nil, errf("storage '%s' does not support '%s' content", sid, content)
	}
	// the worker owns the temporary file from here on
	up.taken = true
	tmp := up.path
	size := up.size
	sum, algo := strings.ToLower(rc.str("checksum")), rc.str("checksum-algorithm")
	dest := s.volPath(in, contentDir(content)+"/"+filename)
	return s.startTask(nodeName, "imgcopy", "", rc.authID, func(tc *taskCtx) error {
		defer os.Remove(tmp)
		pvetmp := "/var/tmp/pveupload-" + hex.EncodeToString([]byte(filepath.Base(tmp)))[:32]
		tc.log("starting file import from: %s", pvetmp)
		if algo != "" {
			got, err := fileHash(algo, tmp)
			if err != nil {
				return err
			}
			if got != sum {
				tc.log("calculating checksum...")
				return fmt.Errorf("checksum mismatch: got '%s' != expect '%s'", got, rc.str("checksum"))
			}
			tc.log("calculating checksum...OK, checksum verified")
		}
		if content == "import" {
			if err := s.checkImageFile(tmp, format); err != nil {
				return err
			}
		}
		tc.log("target node: %s", nodeName)
		tc.log("target file: %s", dest)
		tc.log("file size is: %d", size)
		tc.log("command: cp -- %s %s", pvetmp, dest)
		if err := tc.work(); err != nil {
			return err
		}
		s.mu.Lock()
		_, err := s.storeFile(in, content, filename, format, tmp, size)
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("import failed: cp: %v", err)
		}
		tc.log("finished file import successfully")
		return nil
	}), nil
}

func newHash(algo string) (hash.Hash, error) {
	switch algo {
	case "md5":
		return md5.New(), nil
	case "sha1":
		return sha1.New(), nil
	case "sha224":
		return sha256.New224(), nil
	case "sha256":
		return sha256.New(), nil
	case "sha384":
		return sha512.New384(), nil
	case "sha512":
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("unknown algorithm '%s'", algo)
}

// fileHash mirrors PVE::Tools::get_file_hash (lower-case hex).
func fileHash(algo, path string) (string, error) {
	h, err := newHash(algo)
	if err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("unable to open '%s': %v", path, err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// encodeText mirrors PVE::Tools::encode_text (worker ids must not contain ':').
func encodeText(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e || c == ':' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func handleDownloadURL(s *Server, rc *reqCtx) (any, error) {
	nodeName, sid := rc.str("node"), rc.str("storage")
	s.mu.Lock()
	in, aerr := s.checkStorage(nodeName, sid, false)
	if aerr == nil && in.cfg.path == "" {
		aerr = errf("can't upload to storage type '%s', not a file based storage!", in.cfg.typ)
	}
	s.mu.Unlock()
	if aerr != nil {
		return nil, aerr
	}
	content, rawURL := rc.str("content"), rc.str("url")
	if !in.cfg.content[content] {
		return nil, errf("storage '%s' is not configured for content-type '%s'", sid, content)
	}
	filename := normalizeContentFilename(rc.str("filename"))
	format, aerr := checkImportName(content, filename)
	if aerr != nil {
		if aerr.errors["content"] != "" {
			aerr = paramErr1("content", fmt.Sprintf("upload content-type '%s' is not allowed", content))
		}
		return nil, aerr
	}
	s.mu.Lock()
	if !in.active {
		s.mu.Unlock()
		return nil, errf("storage '%s' is not online", sid)
	}
	s.mu.Unlock()
	sum, algo := rc.str("checksum"), rc.str("checksum-algorithm")
	verify := rc.bool("verify-certificates", true)
	compression := rc.str("compression")
	volname := contentDir(content) + "/" + filename
	dest := s.volPath(in, volname)
	return s.startTask(nodeName, "download", encodeText(filename), rc.authID, func(tc *taskCtx) error {
		if compression != "" && content != "iso" {
			return fmt.Errorf("decompression not supported for %s", content)
		}
		tc.log("downloading %s to %s", rawURL, dest)
		s.mu.Lock()
		existing := in.vols[volname]
		s.mu.Unlock()
		if existing != nil {
			if algo == "" {
				return fmt.Errorf("refusing to override existing file '%s'", dest)
			}
			got, err := fileHash(algo, existing.file)
			if err != nil {
				return err
			}
			if got == strings.ToLower(sum) {
				tc.log("calculating checksum of existing file...OK, got correct file already, no need to download")
				return nil
			}
			tc.log("calculating checksum of existing file...")
			return fmt.Errorf("checksum mismatch: got '%s' != expect '%s', aborting", got, sum)
		}
		tmpDir := filepath.Join(s.opts.DataDir, "tmp")
		os.MkdirAll(tmpDir, 0o700)
		f, err := os.CreateTemp(tmpDir, "download-")
		if err != nil {
			return err
		}
		tmp := f.Name()
		defer os.Remove(tmp)
		wgetTmp := fmt.Sprintf("%s.tmp.%d", dest, tc.t.pid)
		cmd := fmt.Sprintf("wget --progress=dot:giga -O %s %s", wgetTmp, rawURL)
		if !verify {
			cmd += " --no-check-certificate"
		}
		n, err := s.fetch(tc, rawURL, verify, f)
		f.Close()
		if errors.Is(err, errInterrupted) {
			return err
		}
		if err != nil {
			tc.log("%v", err)
			return fmt.Errorf("download failed: command '%s' failed: exit code %d", cmd, wgetExitCode(err))
		}
		tc.log("Length: %d (%s)", n, humanSize(n))
		tc.log("Saving to: '%s'", wgetTmp)
		tc.log("%s (%s) - '%s' saved [%d/%d]", time.Now().UTC().Format("2006-01-02 15:04:05"), humanSize(n)+"B/s", wgetTmp, n, n)
		if algo != "" {
			got, err := fileHash(algo, tmp)
			if err != nil {
				return err
			}
			if got != strings.ToLower(sum) {
				tc.log("calculating checksum...")
				return fmt.Errorf("checksum mismatch: got '%s' != expect '%s'", got, sum)
			}
			tc.log("calculating checksum...OK, checksum verified")
		}
		if content == "import" {
			if err := s.checkImageFile(tmp, format); err != nil {
				return err
			}
		}
		if err := tc.work(); err != nil {
			return err
		}
		s.mu.Lock()
		_, err = s.storeFile(in, content, filename, format, tmp, n)
		s.mu.Unlock()
		if err != nil {
			return fmt.Errorf("download failed: command '%s' failed: exit code 3", cmd)
		}
		tc.log("download of '%s' to '%s' finished", rawURL, dest)
		return nil
	}), nil
}

// wgetError carries wget's exit code.
type wgetError struct {
	code int
	msg  string
}

func (e *wgetError) Error() string { return e.msg }

func wgetExitCode(err error) int {
	var we *wgetError
	if errors.As(err, &we) {
		return we.code
	}
	return 4
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fM", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fK", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d", n)
}

// fetch downloads rawURL into w like wget would; only loopback hosts unless
// AllowExternalDownloads is set.
func (s *Server) fetch(tc *taskCtx, rawURL string, verify bool, w io.Writer) (int64, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return 0, &wgetError{1, fmt.Sprintf("%s: Invalid URL", rawURL)}
	}
	allowExternal := s.opts.AllowExternalDownloads
	dialer := &net.Dialer{Timeout: 30 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
			if err != nil {
				return nil, err
			}
			for _, ip := range ips {
				if !allowExternal && !ip.IP.IsLoopback() {
					return nil, fmt.Errorf("pvesim: refusing to connect to non-loopback address %s", ip.IP)
				}
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort(ips[0].IP.String(), port))
		},
		TLSClientConfig: &tls.Config{InsecureSkipVerify: !verify},
	}
	if verify && s.opts.DownloadRootCAs != nil {
		tr.TLSClientConfig.RootCAs = s.opts.DownloadRootCAs
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	go func() {
		select {
		case <-tc.t.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, err := http.NewRequestWithContext(ctx, "GET", u.String(), nil)
	if err != nil {
		return 0, &wgetError{1, err.Error()}
	}
	req.Header.Set("User-Agent", "Wget/1.25.0")
	tc.log("--%s--  %s", time.Now().UTC().Format("2006-01-02 15:04:05"), rawURL)
	resp, err := client.Do(req)
	if err != nil {
		var cerr *tls.CertificateVerificationError
		if errors.As(err, &cerr) {
			return 0, &wgetError{5, fmt.Sprintf("ERROR: cannot verify %s's certificate: %v", u.Host, cerr.Err)}
		}
		return 0, &wgetError{4, fmt.Sprintf("failed: %v.", err)}
	}
	defer resp.Body.Close()
	tc.log("HTTP request sent, awaiting response... %s", resp.Status)
	if resp.StatusCode != 200 {
		return 0, &wgetError{8, fmt.Sprintf("%s ERROR %s.", time.Now().UTC().Format("2006-01-02 15:04:05"), resp.Status)}
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		if ctx.Err() != nil {
			return n, errInterrupted
		}
		return n, &wgetError{4, fmt.Sprintf("Read error at byte %d (%v).", n, err)}
	}
	return n, nil
}
