package pvesim

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

var (
	newDiskRE     = regexp.MustCompile(`^(([^/:\s]+):)?(\d+(\.\d+)?)$`)
	cloudinitRE   = regexp.MustCompile(`vm-\d+-cloudinit`)
	netKeyRE      = regexp.MustCompile(`^net(\d+)$`)
	ipconfigKeyRE = regexp.MustCompile(`^ipconfig(\d+)$`)
	unusedKeyRE   = regexp.MustCompile(`^unused(\d+)$`)
)

// driveFormat returns the property-string format of a drive key.
func driveFormat(key string) map[string]*subProp {
	pf := mustSchema().PropFormats
	if m := driveNameRE.FindStringSubmatch(key); m != nil {
		return pf[m[1]]
	}
	switch {
	case key == "efidisk0", key == "tpmstate0":
		return pf[key]
	case unusedKeyRE.MatchString(key):
		return pf["unused"]
	}
	return nil
}

// isDriveKey reports whether key is a disk slot (ide/sata/scsi/virtio/efidisk0/tpmstate0).
func isDriveKey(key string) bool {
	if m := driveNameRE.FindStringSubmatch(key); m != nil {
		n, _ := strconv.Atoi(m[2])
		return n < driveMax[m[1]]
	}
	return key == "efidisk0" || key == "tpmstate0"
}

func parseDrive(key, val string) map[string]string {
	f := driveFormat(key)
	if f == nil {
		return nil
	}
	d, err := parsePropertyString(f, val, "", false)
	if err != nil {
		return nil
	}
	return d
}

func printDrive(key string, d map[string]string) string {
	return printPropertyString(driveFormat(key), d)
}

func isCloudinitDrive(val string) bool {
	d := parseDrive("ide0", val)
	return d != nil && cloudinitRE.MatchString(d["file"])
}

func isCDROM(val string) bool {
	d := parseDrive("ide0", val)
	if d == nil {
		return false
	}
	return d["media"] == "cdrom" || d["file"] == "cdrom" || cloudinitRE.MatchString(d["file"])
}

func driveSize(val string) int64 {
	d := parseDrive("ide0", val)
	if d == nil {
		return 0
	}
	n, _ := parseSize(d["size"])
	return n
}

var busOrder = []string{"ide", "sata", "scsi", "virtio"}

// sortedDriveKeys lists the disk keys of conf in PVE's foreach_volume order.
func sortedDriveKeys(conf map[string]string) []string {
	var out []string
	for _, bus := range busOrder {
		for i := 0; i < driveMax[bus]; i++ {
			k := bus + strconv.Itoa(i)
			if _, ok := conf[k]; ok {
				out = append(out, k)
			}
		}
	}
	for _, k := range []string{"efidisk0", "tpmstate0"} {
		if _, ok := conf[k]; ok {
			out = append(out, k)
		}
	}
	return out
}

// bootOrder returns the devices of "boot: order=..." (or the default order).
func bootOrder(conf map[string]string) []string {
	if b := conf["boot"]; b != "" {
		if d, err := parsePropertyString(bootFormat, b, "", false); err == nil && d["order"] != "" {
			return splitList(d["order"])
		}
	}
	return defaultBootDevices(conf)
}

// defaultBootDevices mirrors get_default_bootdevices: first disk, first
// cdrom (not the cloud-init drive), first NIC.
func defaultBootDevices(conf map[string]string) []string {
	var out []string
	for _, k := range sortedDriveKeys(conf) {
		if !isCDROM(conf[k]) && driveNameRE.MatchString(k) {
			out = append(out, k)
			break
		}
	}
	for _, k := range sortedDriveKeys(conf) {
		if isCDROM(conf[k]) && !isCloudinitDrive(conf[k]) {
			out = append(out, k)
			break
		}
	}
	for i := 0; i < 32; i++ {
		if _, ok := conf["net"+strconv.Itoa(i)]; ok {
			out = append(out, "net"+strconv.Itoa(i))
			break
		}
	}
	return out
}

// parseNet parses a netN value.
func parseNet(val string) map[string]string {
	d, err := parsePropertyString(mustSchema().PropFormats["net"], val, "", false)
	if err != nil {
		return nil
	}
	return d
}

func printNet(d map[string]string) string {
	return printPropertyString(mustSchema().PropFormats["net"], d)
}

func parseIPConfig(val string) map[string]string {
	d, err := parsePropertyString(ipconfigFormat, val, "", false)
	if err != nil {
		return map[string]string{}
	}
	return d
}

// normalizeTags mirrors get_unique_tags: split, de-duplicate, sort, join with ';'.
func normalizeTags(tags string) string {
	seen := map[string]bool{}
	var out []string
	for _, t := range splitList(tags) {
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return strings.Join(out, ";")
}

// serializeConfig renders the config file as qemu-server writes it; its
// SHA1 is the digest.
func serializeConfig(conf, pending map[string]string, pendingDel []string) string {
	var b strings.Builder
	if d := conf["description"]; d != "" {
		for _, l := range strings.Split(d, "\n") {
			b.WriteString("#" + l + "\n")
		}
	}
	writeSection := func(m map[string]string) {
		keys := make([]string, 0, len(m))
		for k := range m {
			if k != "description" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString(k + ": " + m[k] + "\n")
		}
	}
	writeSection(conf)
	if len(pending) > 0 || len(pendingDel) > 0 {
		b.WriteString("\n[PENDING]\n")
		if d := pending["description"]; d != "" {
			for _, l := range strings.Split(d, "\n") {
				b.WriteString("#" + l + "\n")
			}
		}
		if len(pendingDel) > 0 {
			b.WriteString("delete: " + strings.Join(pendingDel, ",") + "\n")
		}
		writeSection(pending)
	}
	return b.String()
}

func (v *vm) digest() string {
	sum := sha1.Sum([]byte(serializeConfig(v.conf, v.pending, v.pendingDel)))
	return hex.EncodeToString(sum[:])
}

// effectiveConf returns the config with pending changes applied.
func (v *vm) effectiveConf() map[string]string {
	out := make(map[string]string, len(v.conf)+len(v.pending))
	for k, val := range v.conf {
		out[k] = val
	}
	for _, k := range v.pendingDel {
		delete(out, k)
	}
	for k, val := range v.pending {
		out[k] = val
	}
	return out
}

// configParamType returns the schema type of a config key (for typing the
// values in GET config responses the way qemu-server's parser does).
func configParamType(key string) string {
	ep := mustSchema().endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")
	if ep == nil {
		return "string"
	}
	if p := ep.lookup(key); p != nil {
		return p.Type
	}
	return "string"
}

// typedValue converts a config string to the JSON type PVE returns.
func typedValue(key, val string) any {
	switch configParamType(key) {
	case "integer", "boolean":
		if n, err := strconv.ParseInt(val, 10, 64); err == nil {
			return n
		}
	case "number":
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			return f
		}
	}
	return val
}

// optionExists mirrors PVE::QemuServer::option_exists.
func optionExists(key string) bool {
	ep := mustSchema().endpoint("PUT", "/nodes/{node}/qemu/{vmid}/config")
	switch key {
	case "node", "vmid", "delete", "revert", "digest", "skiplock", "force", "background_delay", "import-working-storage":
		return false
	}
	return ep.lookup(key) != nil
}

// volumeOwner parses the owner VMID from a volname (vm-ID-..., base-ID-...).
var ownerRE = regexp.MustCompile(`(?:^|/)(?:vm|base)-(\d+)-`)

func volumeOwner(volname string) int {
	last := volname
	if i := strings.LastIndex(volname, "/"); i >= 0 {
		last = volname[i+1:]
	}
	m := ownerRE.FindStringSubmatch(last)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func fmtVMID(id int) string { return fmt.Sprintf("%d", id) }
