package pvesim

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// loadVM mirrors PVE::QemuConfig->load_config on a node (s.mu held).
func (s *Server) loadVM(nodeName string, vmid int) (*vm, *apiError) {
	v := s.vms[vmid]
	if v == nil || v.node != nodeName {
		return nil, errf("Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", nodeName, vmid)
	}
	return v, nil
}

func checkLock(v *vm) error {
	if l := v.conf["lock"]; l != "" {
		return fmt.Errorf("VM is locked (%s)", l)
	}
	return nil
}

func (s *Server) checkSkiplock(rc *reqCtx) *apiError {
	if rc.bool("skiplock", false) && rc.authID != "root@pam" {
		return paramErr1("skiplock", "Only root may use this option.")
	}
	return nil
}

// validateSSHKeys mirrors PVE::Tools::validate_ssh_public_keys.
func validateSSHKeys(encoded string) *apiError {
	for _, line := range strings.Split(uriUnescape(encoded), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
			return errf("SSH public key validation error")
		}
	}
	return nil
}

// volumeType mirrors parse_volname's vtype.
func volumeType(volname string) string {
	switch {
	case strings.HasPrefix(volname, "import/"):
		return "import"
	case strings.HasPrefix(volname, "iso/"):
		return "iso"
	case strings.HasPrefix(volname, "vztmpl/"):
		return "vztmpl"
	case strings.HasPrefix(volname, "snippets/"):
		return "snippets"
	case strings.HasPrefix(volname, "backup/"), strings.HasPrefix(volname, "dump/"):
		return "backup"
	}
	return "images"
}

// checkDriveParams mirrors $check_drive_param and $check_storage_access.
func (s *Server) checkDriveParams(nodeName string, params map[string]string, defStorage string) *apiError {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		if !isDriveKey(k) {
			continue
		}
		d := parseDrive(k, params[k])
		if d == nil {
			return paramErr1(k, "unable to parse drive options")
		}
		file := d["file"]
		m := newDiskRE.FindStringSubmatch(file)
		if src := d["import-from"]; src != "" {
			if m == nil || m[3] != "0" {
				return paramErr1(k, "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>")
			}
			if sid, volname, ok := strings.Cut(src, ":"); ok && !strings.HasPrefix(src, "/") {
				if s.storageCfg(sid) == nil {
					return errf("storage '%s' does not exist", sid)
				}
				if vt := volumeType(volname); vt != "images" && vt != "import" {
					return paramErr1(k, fmt.Sprintf("%s has wrong type '%s' - needs to be 'images' or 'import'", src, vt))
				}
			}
		}
		sid, volname, hasSID := strings.Cut(file, ":")
		cdrom := d["media"] == "cdrom" || file == "cdrom"
		switch {
		case file == "" || file == "none" || file == "cloudinit" || (hasSID && volname == "cloudinit"):
			if hasSID && s.storageCfg(sid) == nil {
				return errf("storage '%s' does not exist", sid)
			}
		case file == "cdrom":
		case !cdrom && m != nil:
			st := m[2]
			if st == "" {
				st = defStorage
			}
			if st == "" {
				return errf("no storage ID specified (and no default storage)")
			}
			c := s.storageCfg(st)
			if c == nil {
				return errf("storage '%s' does not exist", st)
			}
			if !c.content["images"] {
				return paramErr1("storage", fmt.Sprintf("storage '%s' does not support vm images", st))
			}
		case hasSID:
			if s.storageCfg(sid) == nil {
				return errf("storage '%s' does not exist", sid)
			}
			vt := volumeType(volname)
			if vt == "iso" && d["media"] != "cdrom" {
				return paramErr1(k, "explicit 'media=cdrom' is required for iso images")
			}
			if vt != "images" && vt != "iso" {
				return paramErr1(k, "content type needs to be 'images' or 'iso'")
			}
		}
	}
	return nil
}

// addRandomMACs mirrors add_random_macs / print_net for netN params.
func (s *Server) addRandomMACs(params map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range params {
		if !netKeyRE.MatchString(k) {
			continue
		}
		n := parseNet(v)
		if n == nil {
			continue
		}
		if n["macaddr"] == "" {
			n["macaddr"] = s.randomMAC()
		}
		params[k] = printNet(n)
	}
}

// createDisks mirrors create_disks: allocate new disks, import disks
// ("STORAGE:0,import-from=..."), create cloud-init drives and check existing
// volumes. It returns the resulting drive strings and the new volumes.
func (s *Server) createDisks(tc *taskCtx, nodeName string, vmid int, conf map[string]string, settings map[string]string, defStorage string) (map[string]string, []*volume, error) {
	res := map[string]string{}
	var created []*volume
	keys := make([]string, 0, len(settings))
	for k := range settings {
		if isDriveKey(k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	fail := func(err error) (map[string]string, []*volume, error) {
		s.mu.Lock()
		for _, v := range created {
			s.freeVolume(v)
		}
		s.mu.Unlock()
		return nil, nil, err
	}
	for _, k := range keys {
		d := parseDrive(k, settings[k])
		file := d["file"]
		sid, volname, hasSID := strings.Cut(file, ":")
		switch {
		case file == "" || file == "none" || file == "cdrom":
			delete(d, "size")
			res[k] = printDrive(k, d)
		case hasSID && volname == "cloudinit":
			if sid == "" {
				sid = defStorage
			}
			for ck, cv := range conf {
				if isDriveKey(ck) && ck != k && isCloudinitDrive(cv) {
					return fail(fmt.Errorf("%s - cloud-init drive is already attached at '%s'", k, ck))
				}
			}
			s.mu.Lock()
			in, aerr := s.checkStorage(nodeName, sid, true)
			if aerr != nil {
				s.mu.Unlock()
				return fail(aerr)
			}
			name, format := fmt.Sprintf("vm-%d-cloudinit", vmid), "raw"
			if in.cfg.path != "" {
				format = "qcow2"
				name = fmt.Sprintf("%d/vm-%d-cloudinit.qcow2", vmid, vmid)
			}
			if old := in.vols[name]; old != nil {
				s.freeVolume(old)
			}
			v, aerr := s.allocVolume(in, name, format, "images", vmid, 4<<20)
			s.mu.Unlock()
			if aerr != nil {
				return fail(aerr)
			}
			created = append(created, v)
			d["file"] = v.volid()
			d["media"] = "cdrom"
			delete(d, "format")
			res[k] = printDrive(k, d)
			tc.log("%s: successfully created disk '%s'", k, res[k])
		case newDiskRE.MatchString(file):
			m := newDiskRE.FindStringSubmatch(file)
			st := m[2]
			if st == "" {
				st = defStorage
			}
			gib, _ := strconv.ParseFloat(m[3], 64)
			size := int64(gib * (1 << 30))
			s.mu.Lock()
			in, aerr := s.checkStorage(nodeName, st, true)
			if aerr != nil {
				s.mu.Unlock()
				return fail(aerr)
			}
			format := d["format"]
			if format == "" {
				format = defaultFormat(in)
			}
			src := d["import-from"]
			delete(d, "import-from")
			if src != "" {
				sv, aerr := s.findVolume(nodeName, src)
				if aerr != nil {
					s.mu.Unlock()
					return fail(fmt.Errorf("cannot import from '%s' - %s", src, strings.TrimSpace(aerr.msg)))
				}
				if cloudinitRE.MatchString(sv.name) {
					s.mu.Unlock()
					return fail(fmt.Errorf("cannot import from '%s' - cannot import from cloudinit disk", src))
				}
				size = sv.size
				if sv.virtual > 0 {
					size = sv.virtual
				}
				if !sv.inst.active {
					s.mu.Unlock()
					return fail(fmt.Errorf("cannot import from '%s' - storage '%s' is not online", src, sv.inst.cfg.id))
				}
			}
			name := s.diskName(in, vmid, format)
			v, aerr := s.allocVolume(in, name, format, "images", vmid, size)
			s.mu.Unlock()
			if aerr != nil {
				if src != "" {
					return fail(fmt.Errorf("cannot import from '%s' - %s", src, strings.TrimSpace(aerr.msg)))
				}
				return fail(aerr)
			}
			created = append(created, v)
			v.blank = src == ""
			if src != "" {
				tc.log("create full clone of drive %s (%s)", k, src)
				if in.cfg.typ == "lvmthin" {
					tc.log("  Logical volume \"%s\" created.", name)
				}
				tc.log("transferred 0.0 B of %s (0.00%%)", humanBytes(size))
				tc.log("transferred %s of %s (100.00%%)", humanBytes(size), humanBytes(size))
			}
			d["file"] = v.volid()
			d["size"] = formatSize(size)
			delete(d, "format")
			res[k] = printDrive(k, d)
			tc.log("%s: successfully created disk '%s'", k, res[k])
		default:
			s.mu.Lock()
			v, aerr := s.findVolume(nodeName, file)
			if aerr == nil && d["format"] != "" && d["format"] != v.format {
				aerr = errf("drive '%s' - volume '%s' - 'format=%s' option different from storage format '%s'", k, file, d["format"], v.format)
			}
			if aerr == nil && v.content != "images" && v.content != "iso" {
				aerr = errf("cannot use volume %s - content type needs to be 'images' or 'iso'", file)
			}
			s.mu.Unlock()
			if aerr != nil {
				if strings.HasPrefix(aerr.msg, "volume '") {
					return fail(fmt.Errorf("volume %s does not exist", file))
				}
				return fail(aerr)
			}
			d["size"] = formatSize(v.size)
			res[k] = printDrive(k, d)
		}
	}
	return res, created, nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// makeBase converts a VM's image volume into a base volume (template).
func (s *Server) makeBase(v *volume) {
	in := v.inst
	delete(in.vols, v.name)
	v.name = strings.Replace(v.name, fmt.Sprintf("vm-%d-", v.vmid), fmt.Sprintf("base-%d-", v.vmid), 1)
	v.base = true
	in.vols[v.name] = v
}

func configParams(params map[string]string, skip ...string) map[string]string {
	out := map[string]string{}
	for k, v := range params {
		out[k] = v
	}
	for _, k := range append([]string{"node", "vmid"}, skip...) {
		delete(out, k)
	}
	return out
}

func handleVMCreate(s *Server, rc *reqCtx) (any, error) {
	nodeName := rc.str("node")
	vmid := rc.int("vmid", 0)
	params := configParams(rc.params, "archive", "bwlimit", "force", "pool", "start", "ha-managed",
		"storage", "unique", "live-restore", "import-working-storage")
	storage := rc.str("storage")
	start := rc.bool("start", false)
	if rc.has("archive") {
		return nil, errf("restore is not supported by pvesim")
	}
	if ks, ok := params["sshkeys"]; ok {
		if aerr := validateSSHKeys(ks); aerr != nil {
			return nil, aerr
		}
	}
	s.mu.Lock()
	aerr := s.checkQuorum()
	if aerr == nil && storage != "" && s.storageCfg(storage) == nil {
		aerr = errf("storage '%s' does not exist", storage)
	}
	s.mu.Unlock()
	if aerr != nil {
		return nil, aerr
	}
	if v, ok := params["cdrom"]; ok {
		if !strings.Contains(v, "media=") {
			v += ",media=cdrom"
		}
		params["ide2"] = v
		delete(params, "cdrom")
	}
	if aerr := s.checkDriveParams(nodeName, params, storage); aerr != nil {
		return nil, aerr
	}
	for k, v := range params {
		if isDriveKey(k) {
			params[k] = printDrive(k, parseDrive(k, v))
		}
	}
	s.addRandomMACs(params)
	if pw, ok := params["cipassword"]; ok && !isCryptedPassword(pw) && ciFormat(params) == "nocloud" {
		s.mu.Lock()
		params["cipassword"] = s.encryptPassword(pw)
		s.mu.Unlock()
	}

	// create_and_lock_config
	s.mu.Lock()
	if old := s.vms[vmid]; old != nil {
		s.mu.Unlock()
		return nil, errf("unable to create VM %d - VM %d already exists on node '%s'", vmid, vmid, old.node)
	}
	v := &vm{vmid: vmid, node: nodeName, conf: map[string]string{"lock": "create"}}
	s.vms[vmid] = v
	s.mu.Unlock()

	return s.startTask(nodeName, "qmcreate", strconv.Itoa(vmid), rc.authID, func(tc *taskCtx) error {
		err := s.createVM(tc, v, params, storage)
		if err != nil {
			s.mu.Lock()
			if s.vms[vmid] == v {
				delete(s.vms, vmid)
			}
			s.mu.Unlock()
			return err
		}
		if start {
			tc.log("Execute autostart")
			if err := s.doStart(tc, nodeName, vmid, false); err != nil {
				tc.warn("%v", err)
			}
		}
		return nil
	}), nil
}

func (s *Server) createVM(tc *taskCtx, v *vm, params map[string]string, storage string) error {
	unlock, err := s.lockConfig(v.vmid, true, s.lockTimeoutFull(), tc.t.stop)
	if err != nil {
		return fmt.Errorf("unable to create VM %d - %v", v.vmid, err)
	}
	defer unlock()
	if err := tc.work(); err != nil {
		return fmt.Errorf("unable to create VM %d - %v", v.vmid, err)
	}
	conf := map[string]string{}
	for k, val := range params {
		conf[k] = val
	}
	isTemplate := conf["template"] == "1"
	created, vols, err := s.createDisks(tc, v.node, v.vmid, conf, params, storage)
	if err != nil {
		return fmt.Errorf("unable to create VM %d - %v", v.vmid, err)
	}
	for k, val := range created {
		conf[k] = val
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if isTemplate {
		for _, vol := range vols {
			if !cloudinitRE.MatchString(vol.name) {
				old := vol.volid()
				s.makeBase(vol)
				for k, val := range conf {
					if isDriveKey(k) {
						conf[k] = strings.Replace(val, old, vol.volid(), 1)
					}
				}
			}
		}
	}
	if conf["boot"] == "" {
		if devs := defaultBootDevices(conf); len(devs) > 0 {
			conf["boot"] = "order=" + strings.Join(devs, ";")
		}
	}
	conf["meta"] = fmt.Sprintf("creation-qemu=10.1.2,ctime=%d", time.Now().Unix())
	if conf["smbios1"] == "" {
		conf["smbios1"] = "uuid=" + s.randomUUID()
	}
	if conf["vmgenid"] == "" || conf["vmgenid"] == "1" {
		conf["vmgenid"] = s.randomUUID()
	}
	if t, ok := conf["tags"]; ok {
		conf["tags"] = normalizeTags(t)
	}
	v.conf = conf
	v.ciApplied = ciSnapshot(conf)
	return nil
}

// ciSnapshot records the cloud-init relevant values the image is generated from.
func ciSnapshot(conf map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range conf {
		if isCloudinitKey(k) || netKeyRE.MatchString(k) {
			out[k] = v
		}
	}
	return out
}

func (s *Server) hasCloudinitDrive(conf map[string]string) bool {
	for k, v := range conf {
		if isDriveKey(k) && isCloudinitDrive(v) {
			return true
		}
	}
	return false
}

func handleVMList(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	nodeName := rc.str("node")
	full := rc.bool("full", false)
	out := []any{}
	for _, id := range s.vmIDs() {
		v := s.vms[id]
		if v.node != nodeName {
			continue
		}
		out = append(out, s.vmStatus(v, full))
	}
	return out, nil
}

// vmStatus mirrors PVE::QemuServer::vmstatus for one VM.
func (s *Server) vmStatus(v *vm, full bool) map[string]any {
	d := map[string]any{
		"vmid": v.vmid, "name": v.name(), "status": "stopped", "cpus": vmCPUs(v.conf),
		"maxmem": vmMaxMem(v.conf), "maxdisk": bootDiskSize(v.conf), "mem": 0, "disk": 0,
		"uptime": 0, "cpu": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
	}
	if v.isTemplate() {
		d["template"] = 1
	}
	if l := v.conf["lock"]; l != "" {
		d["lock"] = l
	}
	if t := v.conf["tags"]; t != "" {
		d["tags"] = t
	}
	for k := range v.conf {
		if strings.HasPrefix(k, "serial") {
			d["serial"] = 1
		}
	}
	if v.running {
		d["status"] = "running"
		d["pid"] = v.pid
		d["uptime"] = int64(time.Since(v.startedAt).Seconds())
		d["mem"] = vmMaxMem(v.conf) / 4
		d["cpu"] = 0.01
		if full {
			d["qmpstatus"] = "running"
			d["running-machine"] = "pc-i440fx-10.1+pve0"
			d["running-qemu"] = "10.1.2"
		}
	}
	return d
}

func handleVMStatus(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, aerr := s.loadVM(rc.str("node"), rc.int("vmid", 0))
	if aerr != nil {
		return nil, aerr
	}
	st := s.vmStatus(v, true)
	st["ha"] = map[string]any{"managed": 0}
	if agentEnabled(v.conf) {
		st["agent"] = 1
	}
	return st, nil
}

func agentEnabled(conf map[string]string) bool {
	a := conf["agent"]
	if a == "" {
		return false
	}
	d, err := parsePropertyString(mustSchema().PropFormats["agent"], a, "", false)
	if err != nil {
		return false
	}
	return d["enabled"] == "1"
}

func handleVMConfig(s *Server, rc *reqCtx) (any, error) {
	if rc.has("snapshot") {
		if rc.bool("current", false) {
			return nil, paramErr(map[string]string{
				"snapshot": "cannot use 'snapshot' parameter with 'current'",
				"current":  "cannot use 'snapshot' parameter with 'current'",
			})
		}
		return nil, errf("snapshot '%s' does not exist", rc.str("snapshot"))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, aerr := s.loadVM(rc.str("node"), rc.int("vmid", 0))
	if aerr != nil {
		return nil, aerr
	}
	conf := v.conf
	if !rc.bool("current", false) {
		conf = v.effectiveConf()
	}
	out := map[string]any{"digest": v.digest()}
	for k, val := range conf {
		out[k] = typedValue(k, val)
	}
	if _, ok := conf["cipassword"]; ok {
		out["cipassword"] = "**********"
	}
	return out, nil
}

func handleVMPending(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, aerr := s.loadVM(rc.str("node"), rc.int("vmid", 0))
	if aerr != nil {
		return nil, aerr
	}
	keys := map[string]bool{"digest": true}
	for k := range v.conf {
		keys[k] = true
	}
	for k := range v.pending {
		keys[k] = true
	}
	for _, k := range v.pendingDel {
		keys[k] = true
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	out := []any{}
	for _, k := range names {
		item := map[string]any{"key": k}
		if k == "digest" {
			item["value"] = v.digest()
		}
		if val, ok := v.conf[k]; ok {
			item["value"] = typedValue(k, val)
			if k == "cipassword" {
				item["value"] = "**********"
			}
		}
		if val, ok := v.pending[k]; ok {
			item["pending"] = typedValue(k, val)
			if k == "cipassword" {
				item["pending"] = "********** "
			}
		}
		for _, d := range v.pendingDel {
			if d == k {
				item["delete"] = 1
			}
		}
		out = append(out, item)
	}
	return out, nil
}

// nextUnused returns the next free unusedN key.
func nextUnused(conf map[string]string) string {
	for i := 0; ; i++ {
		k := "unused" + strconv.Itoa(i)
		if _, ok := conf[k]; !ok {
			return k
		}
	}
}

// registerUnused mirrors vmconfig_register_unused_drive (s.mu held).
func (s *Server) registerUnused(v *vm, val string, force bool) {
	d := parseDrive("ide0", val)
	if d == nil {
		return
	}
	vol, err := s.findVolume(v.node, d["file"])
	if cloudinitRE.MatchString(d["file"]) {
		if err == nil {
			s.freeVolume(vol)
		}
		return
	}
	if isCDROM(val) || err != nil || vol.vmid != v.vmid {
		return
	}
	if force {
		s.freeVolume(vol)
		return
	}
	v.conf[nextUnused(v.conf)] = vol.volid()
}

// fastPlug are options applied immediately even on running VMs.
var fastPlug = map[string]bool{"name": true, "description": true, "tags": true, "onboot": true,
	"protection": true, "hookscript": true, "vmstatestorage": true, "lock": true, "boot": false}

func hotpluggable(conf map[string]string, key string) bool {
	if fastPlug[key] || isCloudinitKey(key) {
		return true
	}
	hp := conf["hotplug"]
	if hp == "" || hp == "1" {
		hp = "network,disk,usb"
	}
	if hp == "0" {
		return false
	}
	feat := map[string]bool{}
	for _, f := range splitList(hp) {
		feat[f] = true
	}
	switch {
	case netKeyRE.MatchString(key):
		return feat["network"]
	case isDriveKey(key):
		return feat["disk"] && !isCDROM(conf[key])
	case key == "memory":
		return feat["memory"]
	case key == "cores", key == "vcpus":
		return feat["cpu"]
	}
	return false
}

// applyPending mirrors vmconfig_apply_pending (stopped VMs) and the
// hotplug subset of vmconfig_hotplug_pending (running VMs). s.mu held.
func (s *Server) applyPending(v *vm, force bool) {
	var keep []string
	for _, k := range v.pendingDel {
		if v.running && !hotpluggable(v.conf, k) {
			keep = append(keep, k)
			continue
		}
		if old, ok := v.conf[k]; ok && isDriveKey(k) {
			s.registerUnused(v, old, force)
		} else if ok && unusedKeyRE.MatchString(k) {
			if vol, err := s.findVolume(v.node, old); err == nil {
				s.freeVolume(vol)
			}
		}
		delete(v.conf, k)
	}
	v.pendingDel = keep
	for k, val := range v.pending {
		if v.running && !hotpluggable(v.conf, k) {
			continue
		}
		if old, ok := v.conf[k]; ok && isDriveKey(k) {
			od, nd := parseDrive(k, old), parseDrive(k, val)
			if od != nil && nd != nil && od["file"] != nd["file"] {
				s.registerUnused(v, old, false)
			}
		}
		v.conf[k] = val
		delete(v.pending, k)
	}
}

func handleVMUpdateAsync(s *Server, rc *reqCtx) (any, error) { return s.updateVM(rc, false) }

func handleVMUpdateSync(s *Server, rc *reqCtx) (any, error) { return s.updateVM(rc, true) }

func (s *Server) updateVM(rc *reqCtx, sync bool) (any, error) {
	nodeName := rc.str("node")
	vmid := rc.int("vmid", 0)
	digest := rc.str("digest")
	skiplock := rc.bool("skiplock", false)
	force := rc.bool("force", false)
	params := configParams(rc.params, "digest", "background_delay", "skip_cloud_init",
		"import-working-storage", "skiplock", "delete", "revert", "force")
	if aerr := s.checkSkiplock(rc); aerr != nil {
		return nil, aerr
	}
	if ks, ok := params["sshkeys"]; ok {
		if aerr := validateSSHKeys(ks); aerr != nil {
			return nil, aerr
		}
	}
	if !rc.has("delete") && !rc.has("revert") && len(params) == 0 {
		return nil, errf("no options specified")
	}
	if v, ok := params["cdrom"]; ok {
		if !strings.Contains(v, "media=") {
			v += ",media=cdrom"
		}
		params["ide2"] = v
		delete(params, "cdrom")
	}
	revert := map[string]bool{}
	for _, opt := range splitList(rc.str("revert")) {
		if !optionExists(opt) {
			return nil, paramErr1("revert", fmt.Sprintf("unknown option '%s'", opt))
		}
		if _, ok := params[opt]; ok {
			return nil, paramErr1("delete", fmt.Sprintf("you can't use '-%s' and -revert %s' at the same time", opt, opt))
		}
		revert[opt] = true
	}
	var deletes []string
	for _, opt := range splitList(rc.str("delete")) {
		if opt == "cdrom" {
			opt = "ide2"
		}
		if _, ok := params[opt]; ok {
			return nil, paramErr1("delete", fmt.Sprintf("you can't use '-%s' and -delete %s' at the same time", opt, opt))
		}
		if revert[opt] {
			return nil, paramErr1("revert", fmt.Sprintf("you can't use '-delete %s' and -revert %s' at the same time", opt, opt))
		}
		if !optionExists(opt) {
			return nil, paramErr1("delete", fmt.Sprintf("unknown option '%s'", opt))
		}
		deletes = append(deletes, opt)
	}
	if aerr := s.checkDriveParams(nodeName, params, ""); aerr != nil {
		return nil, aerr
	}
	for k, v := range params {
		if isDriveKey(k) {
			params[k] = printDrive(k, parseDrive(k, v))
		}
	}
	s.addRandomMACs(params)

	loadAndCheck := func() (*vm, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		v, aerr := s.loadVM(nodeName, vmid)
		if aerr != nil {
			return nil, aerr
		}
		if digest != "" && digest != v.digest() {
			return nil, errf("checksum mismatch (file change by other user?)")
		}
		if !skiplock {
			if err := checkLock(v); err != nil {
				return nil, err
			}
		}
		if b, ok := params["balloon"]; ok {
			mem := params["memory"]
			if mem == "" {
				mem = v.effectiveConf()["memory"]
			}
			bal, _ := strconv.ParseInt(b, 10, 64)
			if bal<<20 > vmMaxMem(map[string]string{"memory": mem}) {
				return nil, errors.New("balloon value too large (must be smaller than assigned memory)")
			}
		}
		return v, nil
	}
	if _, err := loadAndCheck(); err != nil {
		return nil, err
	}

	update := func(tc *taskCtx) error {
		v, err := loadAndCheck()
		if err != nil {
			return err
		}
		var logParts []string
		pk := make([]string, 0, len(params))
		for k := range params {
			pk = append(pk, k)
		}
		sort.Strings(pk)
		for _, k := range pk {
			val := params[k]
			if k == "cipassword" {
				val = "<hidden>"
			}
			logParts = append(logParts, "-"+k, val)
		}
		if rc.has("delete") {
			logParts = append(logParts, "-delete", rc.str("delete"))
		}
		tc.log("update VM %d: %s", vmid, strings.Join(logParts, " "))

		s.mu.Lock()
		for opt := range revert {
			delete(v.pending, opt)
			v.pendingDel = removeString(v.pendingDel, opt)
		}
		bootorder := bootOrder(v.conf)
		for _, opt := range deletes {
			_, inConf := v.conf[opt]
			_, inPending := v.pending[opt]
			if !inConf && !inPending {
				s.mu.Unlock()
				tc.warn("cannot delete '%s' - not set in current configuration!", opt)
				s.mu.Lock()
				continue
			}
			if isDriveKey(opt) && v.conf["protection"] == "1" {
				s.mu.Unlock()
				return fmt.Errorf("can't remove drive '%s' - protection mode enabled", opt)
			}
			if inPending {
				if isDriveKey(opt) {
					s.registerUnused(v, v.pending[opt], false)
				}
				delete(v.pending, opt)
			}
			if contains(bootorder, opt) && v.conf["boot"] != "" {
				bootorder = removeString(bootorder, opt)
				v.pending["boot"] = "order=" + strings.Join(bootorder, ";")
			}
			if opt == "tags" {
				delete(v.conf, opt)
				continue
			}
			if inConf && !contains(v.pendingDel, opt) {
				v.pendingDel = append(v.pendingDel, opt)
			}
		}
		if v.pending == nil {
			v.pending = map[string]string{}
		}
		curConf := v.effectiveConf()
		s.mu.Unlock()

		for _, k := range pk {
			val := params[k]
			switch {
			case isDriveKey(k):
				created, _, err := s.createDisks(tc, nodeName, vmid, curConf, map[string]string{k: val}, "")
				if err != nil {
					return err
				}
				s.mu.Lock()
				if old, ok := v.pending[k]; ok {
					s.registerUnused(v, old, false)
				}
				v.pending[k] = created[k]
				s.mu.Unlock()
			case k == "cipassword":
				s.mu.Lock()
				if !isCryptedPassword(val) && ciFormat(curConf) == "nocloud" {
					val = s.encryptPassword(val)
				}
				v.conf["cipassword"] = val
				s.mu.Unlock()
			case k == "tags":
				s.mu.Lock()
				v.pending[k] = normalizeTags(val)
				s.mu.Unlock()
			case k == "boot":
				bd, _ := parsePropertyString(bootFormat, val, "", false)
				if bd["order"] != "" {
					devs := splitList(bd["order"])
					for _, dev := range devs {
						_, inConf := curConf[dev]
						_, inParam := params[dev]
						if (!inConf && !inParam) || contains(deletes, dev) {
							return fmt.Errorf("invalid bootorder: device '%s' does not exist'", dev)
						}
					}
					val = "order=" + strings.Join(devs, ";")
				}
				s.mu.Lock()
				v.pending[k] = val
				s.mu.Unlock()
			default:
				s.mu.Lock()
				v.pending[k] = val
				s.mu.Unlock()
			}
			s.mu.Lock()
			v.pendingDel = removeString(v.pendingDel, k)
			s.mu.Unlock()
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		// cleanup_pending: drop pending values equal to the current ones
		for k, val := range v.pending {
			if cur, ok := v.conf[k]; ok && cur == val {
				delete(v.pending, k)
			}
		}
		s.applyPending(v, force)
		return nil
	}

	if sync {
		unlock, err := s.lockConfig(vmid, true, s.lockTimeout(), nil)
		if err != nil {
			return nil, err
		}
		defer unlock()
		tc := &taskCtx{s: s, t: &task{stop: make(chan struct{})}}
		if err := update(tc); err != nil {
			return nil, err
		}
		return nil, nil
	}
	upid := s.startTask(nodeName, "qmconfig", strconv.Itoa(vmid), rc.authID, func(tc *taskCtx) error {
		unlock, err := s.lockConfig(vmid, true, s.lockTimeout(), tc.t.stop)
		if err != nil {
			return err
		}
		defer unlock()
		if err := tc.work(); err != nil {
			return err
		}
		return update(tc)
	})
	if rc.has("background_delay") {
		st, err := s.WaitTask(string(upid), time.Duration(rc.int("background_delay", 0))*time.Second)
		if err == nil {
			if st == "OK" || strings.HasPrefix(st, "WARNINGS") {
				return nil, nil
			}
			return nil, errf("failed to update VM %d: %s", vmid, st)
		}
	}
	return upid, nil
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func removeString(l []string, s string) []string {
	var out []string
	for _, x := range l {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func handleVMDestroy(s *Server, rc *reqCtx) (any, error) {
	nodeName := rc.str("node")
	vmid := rc.int("vmid", 0)
	skiplock := rc.bool("skiplock", false)
	if aerr := s.checkSkiplock(rc); aerr != nil {
		return nil, aerr
	}
	s.mu.Lock()
	v, aerr := s.loadVM(nodeName, vmid)
	if aerr == nil && v.conf["protection"] == "1" {
		aerr = errf("can't remove VM %d - protection mode enabled", vmid)
	}
	if aerr == nil && v.running {
		aerr = errf("VM %d is running - destroy failed", vmid)
	}
	s.mu.Unlock()
	if aerr != nil {
		return nil, aerr
	}
	purge := rc.bool("purge", false)
	unreferenced := rc.bool("destroy-unreferenced-disks", false)
	return s.startTask(nodeName, "qmdestroy", strconv.Itoa(vmid), rc.authID, func(tc *taskCtx) error {
		unlock, err := s.lockConfig(vmid, true, s.lockTimeout(), tc.t.stop)
		if err != nil {
			return err
		}
		defer unlock()
		s.mu.Lock()
		v, aerr := s.loadVM(nodeName, vmid)
		if aerr != nil {
			s.mu.Unlock()
			return aerr
		}
		if !skiplock {
			if err := checkLock(v); err != nil {
				s.mu.Unlock()
				return err
			}
		}
		if v.running {
			s.mu.Unlock()
			return fmt.Errorf("VM %d is running - destroy failed", vmid)
		}
		s.mu.Unlock()
		if err := tc.work(); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		// collect owned volumes referenced by the config
		var vols []*volume
		seen := map[*volume]bool{}
		for k, val := range v.effectiveConf() {
			if !isDriveKey(k) && !unusedKeyRE.MatchString(k) {
				continue
			}
			file := val
			if d := parseDrive("ide0", val); d != nil {
				file = d["file"]
			}
			vol, err := s.findVolume(v.node, file)
			if err != nil || vol.vmid != vmid || seen[vol] {
				continue
			}
			seen[vol] = true
			vols = append(vols, vol)
		}
		if unreferenced {
			for _, in := range s.insts {
				if in.node != "" && in.node != v.node {
					continue
				}
				for _, vol := range in.vols {
					if vol.vmid == vmid && !seen[vol] {
						seen[vol] = true
						vols = append(vols, vol)
					}
				}
			}
		}
		for _, vol := range vols {
			if vol.base {
				for _, other := range vol.inst.vols {
					if other.parent == vol.name {
						return fmt.Errorf("base volume '%s' is still in use by linked cloned", vol.volid())
					}
				}
			}
		}
		sort.Slice(vols, func(i, j int) bool { return vols[i].volid() < vols[j].volid() })
		for _, vol := range vols {
			s.freeVolume(vol)
			if vol.inst.cfg.typ == "lvmthin" {
				tc.t.lines = append(tc.t.lines, fmt.Sprintf("  Logical volume \"%s\" successfully removed.", vol.name))
			} else {
				tc.t.lines = append(tc.t.lines, "Removing image: 100% complete...done.")
			}
		}
		if purge {
			tc.t.lines = append(tc.t.lines, fmt.Sprintf("purging VM %d from related configurations..", vmid))
		}
		delete(s.vms, vmid)
		return nil
	}), nil
}

func handleVMTemplate(s *Server, rc *reqCtx) (any, error) {
	nodeName := rc.str("node")
	vmid := rc.int("vmid", 0)
	disk := rc.str("disk")
	unlock, err := s.lockConfig(vmid, true, s.lockTimeout(), nil)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	v, aerr := s.loadVM(nodeName, vmid)
	var cerr error
	switch {
	case aerr != nil:
		cerr = aerr
	case checkLock(v) != nil:
		cerr = checkLock(v)
	case v.isTemplate() && disk == "":
		cerr = errf("you can't convert a template to a template")
	case v.running:
		cerr = errf("you can't convert a VM to template if VM is running")
	case disk != "" && v.conf[disk] == "":
		cerr = errf("disk '%s' does not exist", disk)
	}
	if cerr == nil {
		v.conf["template"] = "1"
	}
	s.mu.Unlock()
	if cerr != nil {
		unlock()
		return nil, cerr
	}
	return s.startTask(nodeName, "qmtemplate", strconv.Itoa(vmid), rc.authID, func(tc *taskCtx) error {
		defer unlock()
		if err := tc.work(); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, k := range sortedDriveKeys(v.conf) {
			if disk != "" && k != disk {
				continue
			}
			val := v.conf[k]
			if isCDROM(val) {
				continue
			}
			d := parseDrive(k, val)
			vol, err := s.findVolume(v.node, d["file"])
			if err != nil || vol.vmid != vmid || vol.base {
				continue
			}
			s.makeBase(vol)
			if vol.inst.cfg.typ == "lvmthin" {
				tc.t.lines = append(tc.t.lines, fmt.Sprintf("  Renamed \"vm-%d-%s\" to \"%s\" in volume group \"%s\"",
					vmid, strings.TrimPrefix(vol.name, fmt.Sprintf("base-%d-", vmid)), vol.name, vol.inst.cfg.vg))
				tc.t.lines = append(tc.t.lines, fmt.Sprintf("  Logical volume %s/%s changed.", vol.inst.cfg.vg, vol.name))
			}
			d["file"] = vol.volid()
			v.conf[k] = printDrive(k, d)
		}
		return nil
	}), nil
}

func handleVMResize(s *Server, rc *reqCtx) (any, error) {
	nodeName := rc.str("node")
	vmid := rc.int("vmid", 0)
	disk, sizestr, digest := rc.str("disk"), rc.str("size"), rc.str("digest")
	skiplock := rc.bool("skiplock", false)
	if aerr := s.checkSkiplock(rc); aerr != nil {
		return nil, aerr
	}
	s.mu.Lock()
	_, aerr := s.loadVM(nodeName, vmid)
	s.mu.Unlock()
	if aerr != nil {
		return nil, aerr
	}
	return s.startTask(nodeName, "resize", strconv.Itoa(vmid), rc.authID, func(tc *taskCtx) error {
		unlock, err := s.lockConfig(vmid, true, s.lockTimeout(), tc.t.stop)
		if err != nil {
			return err
		}
		defer unlock()
		if err := tc.work(); err != nil {
			return err
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		v, aerr := s.loadVM(nodeName, vmid)
		if aerr != nil {
			return aerr
		}
		if digest != "" && digest != v.digest() {
			return errors.New("detected modified configuration - file changed by other user? Try again.")
		}
		if !skiplock {
			if err := checkLock(v); err != nil {
				return err
			}
		}
		val, ok := v.conf[disk]
		if !ok {
			return fmt.Errorf("disk '%s' does not exist", disk)
		}
		d := parseDrive(disk, val)
		if d == nil || d["file"] == "" {
			return fmt.Errorf("disk '%s' has no associated volume", disk)
		}
		if isCDROM(val) {
			return errors.New("you can't resize a cdrom")
		}
		vol, aerr := s.findVolume(v.node, d["file"])
		if aerr != nil {
			return fmt.Errorf("Could not determine current size of volume '%s'", d["file"])
		}
		ext := strings.HasPrefix(sizestr, "+")
		n, _ := parseSize(strings.TrimPrefix(sizestr, "+"))
		newsize := n
		if ext {
			newsize = vol.size + n
		}
		if newsize < vol.size {
			return errors.New("shrinking disks is not supported")
		}
		if newsize == vol.size {
			return nil
		}
		if newsize-vol.size > vol.inst.avail() {
			if vol.inst.cfg.typ == "lvmthin" {
				return fmt.Errorf("command '/sbin/lvextend -L%dk %s/%s' failed: exit code 5", newsize/1024, vol.inst.cfg.vg, vol.name)
			}
			return fmt.Errorf("qemu-img: Could not resize image: No space left on device")
		}
		old := vol.size
		vol.size = newsize
		if vol.inst.cfg.typ == "lvmthin" {
			tc.t.lines = append(tc.t.lines,
				fmt.Sprintf("  Size of logical volume %s/%s changed from %s (%d extents) to %s (%d extents).",
					vol.inst.cfg.vg, vol.name, humanBytes(old), old/(4<<20), humanBytes(newsize), newsize/(4<<20)),
				fmt.Sprintf("  Logical volume %s/%s successfully resized.", vol.inst.cfg.vg, vol.name))
		} else {
			tc.t.lines = append(tc.t.lines, "Image resized.")
		}
		d["size"] = formatSize(newsize)
		v.conf[disk] = printDrive(disk, d)
		return nil
	}), nil
}

// vmEvent renders the hook event for v (s.mu held).
func (s *Server) vmEvent(v *vm) VMEvent {
	conf := map[string]string{}
	for k, val := range v.conf {
		conf[k] = val
	}
	ev := VMEvent{VMID: v.vmid, Node: v.node, Name: v.name(), Config: conf, CIType: ciFormat(conf)}
	ev.Boot, ev.ISO, _ = s.bootDevice(v)
	for _, id := range netIndexes(conf) {
		if n := parseNet(conf["net"+id]); n != nil {
			ev.MACs = append(ev.MACs, n["macaddr"])
		}
	}
	if s.hasCloudinitDrive(conf) {
		ev.UserData, ev.NetworkConfig, ev.MetaData, _ = ciSeed(conf, v.vmid, s.nodeByName(v.node))
	}
	return ev
}

// doStart mirrors vm_start inside a qmstart worker.
func (s *Server) doStart(tc *taskCtx, nodeName string, vmid int, skiplock bool) error {
	unlock, err := s.lockConfig(vmid, true, s.lockTimeout(), tc.t.stop)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	v, aerr := s.loadVM(nodeName, vmid)
	if aerr != nil {
		s.mu.Unlock()
		return aerr
	}
	if !skiplock {
		if err := checkLock(v); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	if v.isTemplate() {
		s.mu.Unlock()
		return errors.New("you can't start a vm if it's a template")
	}
	if v.running {
		s.mu.Unlock()
		return fmt.Errorf("VM %d already running", vmid)
	}
	s.applyPending(v, false)
	n := s.nodeByName(nodeName)
	for _, id := range netIndexes(v.conf) {
		net := parseNet(v.conf["net"+id])
		if net == nil || net["bridge"] == "" {
			continue
		}
		if !contains(n.bridges, net["bridge"]) {
			s.mu.Unlock()
			return fmt.Errorf("bridge '%s' does not exist", net["bridge"])
		}
	}
	for _, k := range sortedDriveKeys(v.conf) {
		d := parseDrive(k, v.conf[k])
		if d == nil {
			continue
		}
		if sid, _, ok := strings.Cut(d["file"], ":"); ok {
			if _, aerr := s.checkStorage(nodeName, sid, true); aerr != nil {
				s.mu.Unlock()
				return aerr
			}
		}
	}
	hasCI := s.hasCloudinitDrive(v.conf)
	if hasCI {
		v.ciApplied = ciSnapshot(v.conf)
	}
	s.mu.Unlock()
	if hasCI {
		tc.log("generating cloud-init ISO")
	}
	if err := tc.work(); err != nil {
		return err
	}
	s.mu.Lock()
	ev := s.vmEvent(v)
	s.mu.Unlock()
	if s.opts.OnStart != nil {
		if err := s.opts.OnStart(ev); err != nil {
			return fmt.Errorf("start failed: %v", err)
		}
	}
	s.mu.Lock()
	v.running = true
	v.startedAt = time.Now()
	v.agentUpAt = v.startedAt.Add(s.opts.AgentDelay)
	v.pid, _ = s.newPID()
	v.bootGen++
	s.afterBoot(v)
	s.mu.Unlock()
	return nil
}

func handleVMStart(s *Server, rc *reqCtx) (any, error) {
	nodeName := rc.str("node")
	vmid := rc.int("vmid", 0)
	skiplock := rc.bool("skiplock", false)
	if aerr := s.checkSkiplock(rc); aerr != nil {
		return nil, aerr
	}
	s.mu.Lock()
	_, aerr := s.loadVM(nodeName, vmid)
	s.mu.Unlock()
	if aerr != nil {
		return nil, aerr
	}
	return s.startTask(nodeName, "qmstart", strconv.Itoa(vmid), rc.authID, func(tc *taskCtx) error {
		return s.doStart(tc, nodeName, vmid, skiplock)
	}), nil
}

func (s *Server) doStop(tc *taskCtx, nodeName string, vmid int, skiplock bool) error {
	unlock, err := s.lockConfig(vmid, true, s.lockTimeout(), tc.t.stop)
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	v, aerr := s.loadVM(nodeName, vmid)
	if aerr != nil {
		s.mu.Unlock()
		return aerr
	}
	if !skiplock {
		if err := checkLock(v); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	running := v.running
	s.mu.Unlock()
	if !running {
		return nil
	}
	if err := tc.work(); err != nil {
		return err
	}
	s.mu.Lock()
	if !v.running { // the guest powered off meanwhile
		s.mu.Unlock()
		return nil
	}
	v.running = false
	v.pid = 0
	v.stopGuest()
	ev := s.vmEvent(v)
	s.applyPending(v, false)
	s.mu.Unlock()
	if s.opts.OnStop != nil {
		s.opts.OnStop(ev)
	}
	return nil
}

func handleVMStop(s *Server, rc *reqCtx) (any, error) {
	return s.stopLike(rc, "qmstop")
}

func handleVMShutdown(s *Server, rc *reqCtx) (any, error) {
	return s.stopLike(rc, "qmshutdown")
}

func (s *Server) stopLike(rc *reqCtx, typ string) (any, error) {
	nodeName := rc.str("node")
	vmid := rc.int("vmid", 0)
	skiplock := rc.bool("skiplock", false)
	if aerr := s.checkSkiplock(rc); aerr != nil {
		return nil, aerr
	}
	s.mu.Lock()
	_, aerr := s.loadVM(nodeName, vmid)
	s.mu.Unlock()
	if aerr != nil {
		return nil, aerr
	}
	return s.startTask(nodeName, typ, strconv.Itoa(vmid), rc.authID, func(tc *taskCtx) error {
		return s.doStop(tc, nodeName, vmid, skiplock)
	}), nil
}

func handleVMClone(s *Server, rc *reqCtx) (any, error) {
	nodeName := rc.str("node")
	vmid := rc.int("vmid", 0)
	newid := rc.int("newid", 0)
	storage, format := rc.str("storage"), rc.str("format")
	target := rc.str("target")
	if target == nodeName || target == "localhost" {
		target = ""
	}
	if rc.has("snapname") {
		return nil, errf("snapshot '%s' does not exist", rc.str("snapname"))
	}
	s.mu.Lock()
	var aerr *apiError
	if target != "" && s.nodeByName(target) == nil {
		aerr = errf("no such cluster node '%s'", target)
	}
	if aerr == nil && storage != "" {
		if _, aerr = s.checkStorage(nodeName, storage, false); aerr == nil && target != "" {
			if _, aerr = s.checkStorage(target, storage, false); aerr == nil && !s.storageCfg(storage).shared {
				aerr = errf("can't clone to non-shared storage '%s'", storage)
			}
		}
	}
	if aerr == nil {
		aerr = s.checkQuorum()
	}
	var src *vm
	if aerr == nil {
		src, aerr = s.loadVM(nodeName, vmid)
	}
	running := src != nil && src.running
	s.mu.Unlock()
	if aerr != nil {
		return nil, aerr
	}
	// lock_config_shared (stopped) or lock_config_full (running) on the source,
	// then lock_config_full on the target; the locks are inherited by the worker.
	unlockSrc, err := s.lockConfig(vmid, running, s.lockTimeoutFull(), nil)
	if err != nil {
		return nil, err
	}
	unlockDst, err := s.lockConfig(newid, true, s.lockTimeoutFull(), nil)
	if err != nil {
		unlockSrc()
		return nil, err
	}
	unlockAll := func() { unlockDst(); unlockSrc() }

	s.mu.Lock()
	cerr := func() error {
		if err := checkLock(src); err != nil {
			return err
		}
		if src.running != running {
			return errors.New("unexpected state change")
		}
		full := !src.isTemplate()
		if rc.has("full") {
			full = rc.bool("full", false)
		}
		if storage != "" && !full {
			return errors.New("parameter 'storage' not allowed for linked clones")
		}
		if format != "" && !full {
			return errors.New("parameter 'format' not allowed for linked clones")
		}
		shared := true
		for _, k := range sortedDriveKeys(src.conf) {
			d := parseDrive(k, src.conf[k])
			if d == nil || d["file"] == "" || d["file"] == "none" || d["file"] == "cdrom" {
				continue
			}
			sid, _, _ := strings.Cut(d["file"], ":")
			if c := s.storageCfg(sid); c != nil && !c.shared {
				shared = false
			}
			if !full && !isCDROM(src.conf[k]) {
				vol, err := s.findVolume(src.node, d["file"])
				if err != nil || !vol.base {
					return fmt.Errorf("Linked clone feature is not supported for drive '%s'", k)
				}
			}
		}
		if target != "" && !shared {
			return fmt.Errorf("can't clone VM to node '%s' (VM uses local storage)", target)
		}
		if _, exists := s.vms[newid]; exists {
			return fmt.Errorf("unable to create VM %d: config file already exists", newid)
		}
		return nil
	}()
	if cerr != nil {
		s.mu.Unlock()
		unlockAll()
		return nil, cerr
	}
	full := !src.isTemplate()
	if rc.has("full") {
		full = rc.bool("full", false)
	}
	dst := &vm{vmid: newid, node: nodeName, conf: map[string]string{"lock": "clone"}}
	s.vms[newid] = dst
	srcConf := map[string]string{}
	for k, val := range src.conf {
		srcConf[k] = val
	}
	s.mu.Unlock()

	name := rc.str("name")
	description, hasDesc := rc.params["description"]
	return s.startTask(nodeName, "qmclone", strconv.Itoa(vmid), rc.authID, func(tc *taskCtx) error {
		defer unlockAll()
		var created []*volume
		cleanup := func(err error) error {
			s.mu.Lock()
			for _, v := range created {
				s.freeVolume(v)
			}
			if s.vms[newid] == dst {
				delete(s.vms, newid)
			}
			s.mu.Unlock()
			return err
		}
		if err := tc.work(); err != nil {
			return cleanup(err)
		}
		s.mu.Lock()
		conf := map[string]string{}
		for k, val := range srcConf {
			if unusedKeyRE.MatchString(k) || k == "template" || k == "lock" || k == "parent" || k == "snaptime" || k == "vmstate" {
				continue
			}
			conf[k] = val
		}
		for _, id := range netIndexes(conf) {
			if n := parseNet(conf["net"+id]); n != nil {
				n["macaddr"] = s.randomMAC()
				conf["net"+id] = printNet(n)
			}
		}
		if sm := conf["smbios1"]; sm != "" {
			parts := strings.Split(sm, ",")
			for i, p := range parts {
				if strings.HasPrefix(p, "uuid=") {
					parts[i] = "uuid=" + s.randomUUID()
				}
			}
			conf["smbios1"] = strings.Join(parts, ",")
		}
		if _, ok := conf["vmgenid"]; ok {
			conf["vmgenid"] = s.randomUUID()
		}
		if name != "" {
			conf["name"] = name
		} else {
			oldName := srcConf["name"]
			if oldName == "" {
				oldName = strconv.Itoa(vmid)
			}
			conf["name"] = "Copy-of-VM-" + oldName
		}
		if hasDesc {
			conf["description"] = description
		}
		s.mu.Unlock()

		for _, k := range sortedDriveKeys(srcConf) {
			val := srcConf[k]
			d := parseDrive(k, val)
			if d == nil {
				continue
			}
			file := d["file"]
			if file == "" || file == "none" || file == "cdrom" || (isCDROM(val) && !isCloudinitDrive(val)) {
				continue
			}
			s.mu.Lock()
			sv, aerr := s.findVolume(nodeName, file)
			if aerr != nil {
				s.mu.Unlock()
				return cleanup(aerr)
			}
			dstStore := sv.inst
			if storage != "" && !isCloudinitDrive(val) && full {
				dstStore = s.inst(nodeName, storage)
			}
			var nv *volume
			if isCloudinitDrive(val) {
				name, fmtName := fmt.Sprintf("vm-%d-cloudinit", newid), "raw"
				if dstStore.cfg.path != "" {
					fmtName = "qcow2"
					name = fmt.Sprintf("%d/vm-%d-cloudinit.qcow2", newid, newid)
				}
				nv, aerr = s.allocVolume(dstStore, name, fmtName, "images", newid, 4<<20)
			} else if full {
				f := format
				if f == "" {
					f = sv.format
					if dstStore != sv.inst {
						f = defaultFormat(dstStore)
					}
				}
				nv, aerr = s.allocVolume(dstStore, s.diskName(dstStore, newid, f), f, "images", newid, sv.size)
			} else {
				base := sv.name
				f := "qcow2"
				if dstStore.cfg.typ == "lvmthin" {
					f = "raw"
				}
				vname := base + "/" + s.diskName(dstStore, newid, f)
				nv, aerr = s.allocVolume(dstStore, vname, f, "images", newid, sv.size)
				if nv != nil {
					nv.parent = base
				}
			}
			if nv != nil {
				nv.blank = sv.blank
			}
			s.mu.Unlock()
			if aerr != nil {
				return cleanup(fmt.Errorf("clone failed: %s", strings.TrimSpace(aerr.msg)))
			}
			created = append(created, nv)
			if isCloudinitDrive(val) {
				tc.log("create full clone of drive %s (%s)", k, file)
			} else if full {
				tc.log("create full clone of drive %s (%s)", k, file)
				if dstStore.cfg.typ == "lvmthin" {
					tc.log("  Logical volume \"%s\" created.", nv.name)
				}
				tc.log("transferred 0.0 B of %s (0.00%%)", humanBytes(nv.size))
				tc.log("transferred %s of %s (100.00%%)", humanBytes(nv.size), humanBytes(nv.size))
			} else {
				tc.log("create linked clone of drive %s (%s)", k, file)
			}
			d["file"] = nv.volid()
			conf[k] = printDrive(k, d)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		dst.conf = conf
		dst.ciApplied = ciSnapshot(conf)
		if target != "" {
			dst.node = target
		}
		return nil
	}), nil
}

func (s *Server) agentCheck(rc *reqCtx) (*vm, *apiError) {
	v, aerr := s.loadVM(rc.str("node"), rc.int("vmid", 0))
	if aerr != nil {
		return nil, aerr
	}
	if !agentEnabled(v.conf) {
		return nil, errf("No QEMU guest agent configured")
	}
	if !v.running {
		return nil, errf("VM %d is not running", v.vmid)
	}
	if v.agentDown || v.noOS || time.Now().Before(v.agentUpAt) {
		return nil, errf("QEMU guest agent is not running")
	}
	return v, nil
}

func handleAgentPing(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, aerr := s.agentCheck(rc); aerr != nil {
		return nil, aerr
	}
	return map[string]any{"result": map[string]any{}}, nil
}

func handleAgentInterfaces(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	v, aerr := s.agentCheck(rc)
	if aerr != nil {
		s.mu.Unlock()
		return nil, aerr
	}
	vmid, nodeName := v.vmid, v.node
	var macs []string
	for _, id := range netIndexes(v.conf) {
		if n := parseNet(v.conf["net"+id]); n != nil {
			macs = append(macs, strings.ToLower(n["macaddr"]))
		}
	}
	s.mu.Unlock()
	ifaces := []any{map[string]any{
		"name":             "lo",
		"hardware-address": "00:00:00:00:00:00",
		"ip-addresses": []any{
			map[string]any{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
			map[string]any{"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128},
		},
		"statistics": ifaceStats(),
	}}
	for i, mac := range macs {
		addrs := []any{}
		if i == 0 && s.opts.AddressFor != nil {
			if ip, ok := s.opts.AddressFor(vmid, nodeName); ok && ip != "" {
				addr, bits, found := strings.Cut(ip, "/")
				prefix := 24
				if found {
					prefix, _ = strconv.Atoi(bits)
				}
				typ := "ipv4"
				if strings.Contains(addr, ":") {
					typ = "ipv6"
					if !found {
						prefix = 64
					}
				}
				addrs = append(addrs, map[string]any{"ip-address-type": typ, "ip-address": addr, "prefix": prefix})
			}
		}
		addrs = append(addrs, map[string]any{"ip-address-type": "ipv6", "ip-address": linkLocal(mac), "prefix": 64})
		ifaces = append(ifaces, map[string]any{
			"name": fmt.Sprintf("eth%d", i), "hardware-address": mac, "ip-addresses": addrs, "statistics": ifaceStats(),
		})
	}
	return map[string]any{"result": ifaces}, nil
}

func ifaceStats() map[string]any {
	return map[string]any{"rx-bytes": 0, "rx-dropped": 0, "rx-errs": 0, "rx-packets": 0,
		"tx-bytes": 0, "tx-dropped": 0, "tx-errs": 0, "tx-packets": 0}
}

// linkLocal derives the EUI-64 IPv6 link-local address of a MAC.
func linkLocal(mac string) string {
	var b [6]byte
	fmt.Sscanf(mac, "%02x:%02x:%02x:%02x:%02x:%02x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5])
	return fmt.Sprintf("fe80::%x:%x:%x:%x", uint16(b[0]^2)<<8|uint16(b[1]), uint16(b[2])<<8|0xff, uint16(0xfe)<<8|uint16(b[3]), uint16(b[4])<<8|uint16(b[5]))
}

func handleCloudinitPending(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, aerr := s.loadVM(rc.str("node"), rc.int("vmid", 0))
	if aerr != nil {
		return nil, aerr
	}
	cur := ciSnapshot(v.conf)
	applied := v.ciApplied
	if applied == nil {
		applied = cur
	}
	keys := map[string]bool{}
	for k := range cur {
		keys[k] = true
	}
	for k := range applied {
		keys[k] = true
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	mask := func(k, val string) string {
		if k == "cipassword" {
			return "**********"
		}
		return val
	}
	out := []any{}
	for _, k := range names {
		nv, inCur := cur[k]
		ov, inApplied := applied[k]
		switch {
		case inCur && !inApplied:
			out = append(out, map[string]any{"key": k, "pending": mask(k, nv)})
		case !inCur && inApplied:
			out = append(out, map[string]any{"key": k, "delete": 1})
		case nv != ov:
			out = append(out, map[string]any{"key": k, "value": mask(k, ov), "pending": mask(k, nv)})
		default:
			out = append(out, map[string]any{"key": k, "value": mask(k, nv)})
		}
	}
	return out, nil
}

func handleCloudinitUpdate(s *Server, rc *reqCtx) (any, error) {
	vmid := rc.int("vmid", 0)
	unlock, err := s.lockConfig(vmid, true, s.lockTimeout(), nil)
	if err != nil {
		return nil, err
	}
	defer unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	v, aerr := s.loadVM(rc.str("node"), vmid)
	if aerr != nil {
		return nil, aerr
	}
	if err := checkLock(v); err != nil {
		return nil, err
	}
	if s.hasCloudinitDrive(v.conf) {
		v.ciApplied = ciSnapshot(v.conf)
	}
	return nil, nil
}

func handleCloudinitDump(s *Server, rc *reqCtx) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, aerr := s.loadVM(rc.str("node"), rc.int("vmid", 0))
	if aerr != nil {
		return nil, aerr
	}
	user, network, meta, err := ciSeed(v.conf, v.vmid, s.nodeByName(v.node))
	if err != nil {
		return nil, err
	}
	switch rc.str("type") {
	case "user":
		return user, nil
	case "network":
		return network, nil
	}
	return meta, nil
}
