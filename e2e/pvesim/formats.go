package pvesim

import (
	"net"
	"regexp"
	"strconv"
	"strings"
)

// Format checks. Each mirrors the validator PVE registers for the format
// name (pve-common JSONSchema.pm, pve-storage, qemu-server) and returns the
// same die() text. Formats the installer's requests never exercise and that
// are not implemented here are accepted (see README "Known deviations").

var (
	configIDRE   = regexp.MustCompile(`(?i)^[a-z][a-z0-9_-]+$`)
	storageIDRE  = regexp.MustCompile(`(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$`)
	bridgeIDRE   = regexp.MustCompile(`^[-_.\w\d]+$`)
	vmidRE       = regexp.MustCompile(`^[1-9][0-9]{2,8}$`)
	nodeRE       = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)
	macRE        = regexp.MustCompile(`(?i)^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$`)
	dnsNameRE    = regexp.MustCompile(`^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$`)
	urlencodedRE = regexp.MustCompile(`^[-%a-zA-Z0-9_.!~*'()]*$`)
	tagRE        = regexp.MustCompile(`(?i)^[a-z0-9_][a-z0-9_\-+.]*$`)
	sizeRE       = regexp.MustCompile(`^(\d+(\.\d+)?)([KMGT])?$`)
	volumeIDRE   = regexp.MustCompile(`(?i)^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$`)
	poolIDRE     = regexp.MustCompile(`^[A-Za-z0-9.\-_]+$`)
	realmRE      = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9.\-_]+$`)
	taskStatusRE = regexp.MustCompile(`(?i)^(ok|error|warning|unknown)$`)
	ipv4RE       = regexp.MustCompile(`^(?:(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])\.){3}(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])$`)
	driveNameRE  = regexp.MustCompile(`^(ide|sata|scsi|virtio)(\d+)$`)
)

// drive slots per bus (qemu-server MAX_IDE_DISKS etc.)
var driveMax = map[string]int{"ide": 4, "sata": 6, "scsi": 31, "virtio": 16}

// splitList mirrors PVE::Tools::split_list.
func splitList(s string) []string {
	if strings.Contains(s, "\x00") {
		return strings.Split(s, "\x00")
	}
	s = strings.NewReplacer(",", " ", ";", " ").Replace(s)
	return strings.Fields(s)
}

// checkFormat validates value against a named format; e may be nil (within
// property strings). path is the parameter path for nested errors.
func checkFormat(e *endpoint, format, value, path string) error {
	if format == "regex" || format == "string" {
		return nil
	}
	name, kind := format, "none"
	if strings.HasSuffix(format, "-list") {
		name, kind = strings.TrimSuffix(format, "-list"), "list"
	} else if strings.HasSuffix(format, "-opt") {
		name, kind = strings.TrimSuffix(format, "-opt"), "opt"
	}
	// named hash formats are property strings
	if pf := namedPropFormat(e, name); pf != nil {
		if kind != "none" {
			return dief("'-%s' format must have code ref, not hash", kind)
		}
		return checkPropertyString(pf, value, path)
	}
	fn := formatValidators[name]
	if fn == nil {
		return nil // not implemented: accepted
	}
	switch kind {
	case "list":
		for _, v := range splitList(value) {
			if err := fn(v); err != nil {
				return err
			}
		}
		return nil
	case "opt":
		if value == "" {
			return nil
		}
	}
	return fn(value)
}

// namedPropFormat returns hash formats registered under a name (the schema
// export only names them). Keys and types follow qemu-server.
func namedPropFormat(e *endpoint, name string) map[string]*subProp {
	switch name {
	case "pve-qm-ipconfig":
		return ipconfigFormat
	case "pve-qm-boot":
		return bootFormat
	case "pve-qm-cicustom":
		return cicustomFormat
	case "pve-vm-cpu-conf":
		return cpuFormat
	case "pve-qm-ide":
		return mustSchema().PropFormats["ide"]
	}
	return nil
}

var ipconfigFormat = map[string]*subProp{
	"ip":  {Type: "string", Optional: true, Format: "pve-ipv4-config"},
	"gw":  {Type: "string", Optional: true, Format: "ipv4"},
	"ip6": {Type: "string", Optional: true, Format: "pve-ipv6-config"},
	"gw6": {Type: "string", Optional: true, Format: "ipv6"},
}

var bootFormat = map[string]*subProp{
	"legacy": {Type: "string", Optional: true, DefaultKey: true, re: regexp.MustCompile(`^(?:[acdn]{1,4})$`)},
	"order":  {Type: "string", Optional: true, Format: "pve-qm-bootdev-list"},
}

var cicustomFormat = map[string]*subProp{
	"meta":    {Type: "string", Optional: true, Format: "pve-volume-id"},
	"network": {Type: "string", Optional: true, Format: "pve-volume-id"},
	"user":    {Type: "string", Optional: true, Format: "pve-volume-id"},
	"vendor":  {Type: "string", Optional: true, Format: "pve-volume-id"},
}

var cpuFormat = map[string]*subProp{
	"cputype":         {Type: "string", Optional: true, DefaultKey: true, re: regexp.MustCompile(`^(?:[-0-9a-zA-Z_+.]+)$`)},
	"flags":           {Type: "string", Optional: true, re: regexp.MustCompile(`^(?:[+-][a-zA-Z0-9\-_\.]+(;[+-][a-zA-Z0-9\-_\.]+)*)$`)},
	"hidden":          {Type: "boolean", Optional: true},
	"hv-vendor-id":    {Type: "string", Optional: true, re: regexp.MustCompile(`^(?:[a-zA-Z0-9]{1,12})$`)},
	"phys-bits":       {Type: "string", Optional: true},
	"reported-model":  {Type: "string", Optional: true},
	"guest-phys-bits": {Type: "integer", Optional: true},
}

var formatValidators = map[string]func(string) error{
	"urlencoded": func(v string) error {
		if !urlencodedRE.MatchString(v) {
			return dief("invalid urlencoded string: %s", v)
		}
		return nil
	},
	"pve-configid": func(v string) error {
		if !configIDRE.MatchString(v) {
			return dief("invalid configuration ID '%s'", v)
		}
		return nil
	},
	"pve-storage-id": func(v string) error {
		if !storageIDRE.MatchString(v) {
			return dief("storage ID '%s' contains illegal characters", v)
		}
		return nil
	},
	"pve-bridge-id": func(v string) error {
		if !bridgeIDRE.MatchString(v) {
			return dief("invalid bridge ID '%s'", v)
		}
		return nil
	},
	"pve-vmid": func(v string) error {
		if !vmidRE.MatchString(v) {
			return dief("value does not look like a valid VM ID")
		}
		return nil
	},
	"pve-node": func(v string) error {
		if !nodeRE.MatchString(v) {
			return dief("value does not look like a valid node name")
		}
		return nil
	},
	"mac-addr": func(v string) error {
		if !macRE.MatchString(v) {
			return dief("value does not look like a valid unicast MAC address")
		}
		return nil
	},
	"ipv4": func(v string) error {
		if !isIPv4(v) {
			return dief("value does not look like a valid IPv4 address")
		}
		return nil
	},
	"ipv6": func(v string) error {
		if !isIPv6(v) {
			return dief("value does not look like a valid IPv6 address")
		}
		return nil
	},
	"ip": func(v string) error {
		if !isIPv4(v) && !isIPv6(v) {
			return dief("value does not look like a valid IP address")
		}
		return nil
	},
	"CIDRv4": func(v string) error {
		if !isCIDRv4(v) {
			return dief("value does not look like a valid IPv4 CIDR network")
		}
		return nil
	},
	"CIDRv6": func(v string) error {
		if !isCIDRv6(v) {
			return dief("value does not look like a valid IPv6 CIDR network")
		}
		return nil
	},
	"CIDR": func(v string) error {
		if !isCIDRv4(v) && !isCIDRv6(v) {
			return dief("value does not look like a valid CIDR network")
		}
		return nil
	},
	"pve-ipv4-config": func(v string) error {
		if v == "dhcp" || v == "manual" || isCIDRv4(v) {
			return nil
		}
		return dief("value does not look like a valid ipv4 network configuration")
	},
	"pve-ipv6-config": func(v string) error {
		if v == "auto" || v == "dhcp" || v == "manual" || isCIDRv6(v) {
			return nil
		}
		return dief("value does not look like a valid ipv6 network configuration")
	},
	"dns-name": func(v string) error {
		if !dnsNameRE.MatchString(v) {
			return dief("value does not look like a valid DNS name")
		}
		return nil
	},
	"address": func(v string) error {
		if !isIPv4(v) && !isIPv6(v) && !dnsNameRE.MatchString(v) {
			return dief("value does not look like a valid address: %s", v)
		}
		return nil
	},
	"disk-size": func(v string) error {
		if _, ok := parseSize(v); !ok {
			return dief("value does not look like a valid disk size: %s", v)
		}
		return nil
	},
	"pve-tag": func(v string) error {
		if !tagRE.MatchString(v) {
			return dief("invalid characters in tag")
		}
		return nil
	},
	"pve-task-status-type": func(v string) error {
		if !taskStatusRE.MatchString(v) {
			return dief("invalid status '%s'", v)
		}
		return nil
	},
	"pve-storage-content": func(v string) error {
		switch v {
		case "import", "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none":
			return nil
		}
		return dief("invalid content type '%s'", v)
	},
	"pve-volume-id": func(v string) error {
		if !volumeIDRE.MatchString(v) {
			return dief("unable to parse volume ID '%s'", v)
		}
		return nil
	},
	"pve-volume-id-or-absolute-path": func(v string) error {
		if strings.HasPrefix(v, "/") {
			return nil
		}
		if !volumeIDRE.MatchString(v) {
			return dief("unable to parse volume ID '%s'", v)
		}
		return nil
	},
	"pve-volume-id-or-qm-path": func(v string) error {
		if v == "none" || v == "cdrom" || strings.HasPrefix(v, "/") {
			return nil
		}
		if !volumeIDRE.MatchString(v) {
			return dief("unable to parse volume ID '%s'", v)
		}
		return nil
	},
	"pve-poolid": func(v string) error {
		if !poolIDRE.MatchString(v) {
			return dief("pool name '%s' contains invalid characters", v)
		}
		return nil
	},
	"pve-realm": func(v string) error {
		if !realmRE.MatchString(v) {
			return dief("realm name '%s' contains invalid characters", v)
		}
		return nil
	},
	"pve-qm-bootdev": func(v string) error {
		if m := driveNameRE.FindStringSubmatch(v); m != nil {
			n, _ := strconv.Atoi(m[2])
			if n < driveMax[m[1]] {
				return nil
			}
		}
		for base, max := range map[string]int{"hostpci": 16, "net": 32, "usb": 14} {
			if strings.HasPrefix(v, base) {
				if n, err := strconv.Atoi(v[len(base):]); err == nil && n >= 0 && n < max {
					return nil
				}
			}
		}
		return dief("invalid boot device '%s'", v)
	},
	"storage-pair": func(v string) error {
		// "source:target", a single default target or "1"
		if v == "1" {
			return nil
		}
		parts := strings.Split(v, ":")
		if len(parts) > 2 {
			return dief("entry '%s' contains invalid ID - storage ID '%s' contains illegal characters", v, v)
		}
		for _, p := range parts {
			if !storageIDRE.MatchString(p) {
				return dief("entry '%s' contains invalid ID - storage ID '%s' contains illegal characters", v, p)
			}
		}
		return nil
	},
}

func isIPv4(s string) bool { return ipv4RE.MatchString(s) }

func isIPv6(s string) bool {
	if !strings.Contains(s, ":") || strings.Contains(s, "%") {
		return false
	}
	ip := net.ParseIP(s)
	return ip != nil
}

func isCIDRv4(s string) bool {
	addr, bits, ok := strings.Cut(s, "/")
	if !ok || !isIPv4(addr) {
		return false
	}
	n, err := strconv.Atoi(bits)
	return err == nil && isDigits(bits) && n > 7 && n <= 32
}

func isCIDRv6(s string) bool {
	addr, bits, ok := strings.Cut(s, "/")
	if !ok || !isIPv6(addr) {
		return false
	}
	n, err := strconv.Atoi(bits)
	return err == nil && isDigits(bits) && n > 7 && n <= 128
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// parseSize mirrors JSONSchema.pm parse_size (bytes).
func parseSize(v string) (int64, bool) {
	m := sizeRE.FindStringSubmatch(v)
	if m == nil {
		return 0, false
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	switch m[3] {
	case "K":
		f *= 1 << 10
	case "M":
		f *= 1 << 20
	case "G":
		f *= 1 << 30
	case "T":
		f *= 1 << 40
	}
	return int64(f), true
}

// formatSize mirrors JSONSchema.pm format_size.
func formatSize(size int64) string {
	kb := size / 1024
	if kb*1024 != size {
		return strconv.FormatInt(size, 10)
	}
	mb := kb / 1024
	if mb*1024 != kb {
		return strconv.FormatInt(kb, 10) + "K"
	}
	gb := mb / 1024
	if gb*1024 != mb {
		return strconv.FormatInt(mb, 10) + "M"
	}
	tb := gb / 1024
	if tb*1024 != gb {
		return strconv.FormatInt(gb, 10) + "G"
	}
	return strconv.FormatInt(tb, 10) + "T"
}
