package artifacts

import (
	"bufio"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"
)

// Supported digest algorithms.
const (
	SHA256 = "sha256"
	SHA512 = "sha512"
)

// Digest is a content checksum: an algorithm and the lower-case hex value.
type Digest struct {
	Algo string
	Hex  string
}

// String renders "algo:hex".
func (d Digest) String() string { return d.Algo + ":" + d.Hex }

// IsZero reports whether no digest is set.
func (d Digest) IsZero() bool { return d.Hex == "" }

// ParseDigest accepts "sha256:<hex>", "sha512:<hex>" or bare hex, whose
// length names the algorithm (64: sha256, 128: sha512).
func ParseDigest(s string) (Digest, error) {
	s = strings.TrimSpace(s)
	algo, value, found := strings.Cut(s, ":")
	if !found {
		algo, value = "", s
	}
	value = strings.ToLower(value)
	if _, err := hex.DecodeString(value); err != nil || value == "" {
		return Digest{}, fmt.Errorf("digest %q: not hex", s)
	}
	byLen := map[int]string{64: SHA256, 128: SHA512}[len(value)]
	switch {
	case byLen == "":
		return Digest{}, fmt.Errorf("digest %q: %d hex digits is neither sha256 (64) nor sha512 (128)", s, len(value))
	case algo == "":
		algo = byLen
	case strings.ToLower(algo) != byLen:
		return Digest{}, fmt.Errorf("digest %q: %d hex digits do not fit %s", s, len(value), algo)
	}
	return Digest{Algo: byLen, Hex: value}, nil
}

func newHash(algo string) (hash.Hash, error) {
	switch algo {
	case SHA256:
		return sha256.New(), nil
	case SHA512:
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("unsupported digest algorithm %q (want sha256 or sha512)", algo)
}

// ChecksumError means downloaded content does not match its expected digest.
type ChecksumError struct {
	URL      string
	Expected Digest
	Actual   Digest
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("checksum mismatch for %s: expected %s, got %s; the download was discarded. "+
		"The file on the server differs from what the checksum names: a corrupted or tampered mirror, or a wrong checksum in the config",
		e.URL, e.Expected, e.Actual)
}

// FindChecksum looks name up in a checksum file: GNU coreutils format
// ("<hex>  name" or "<hex> *name", as in k3s' sha256sum-amd64.txt, SHA256SUMS,
// SHA512SUMS) or BSD format ("SHA256 (name) = <hex>"). Entries with a
// directory ("./name", "dist/name") match on the base name when no entry
// matches exactly.
func FindChecksum(r io.Reader, name string) (Digest, error) {
	var byBase []Digest
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, value, ok := parseChecksumLine(line)
		if !ok {
			continue
		}
		d, err := ParseDigest(value)
		if err != nil {
			continue
		}
		switch {
		case file == name:
			return d, nil
		case path.Base(file) == name:
			byBase = append(byBase, d)
		}
	}
	if err := sc.Err(); err != nil {
		return Digest{}, fmt.Errorf("read checksum file: %w", err)
	}
	if len(byBase) == 1 {
		return byBase[0], nil
	}
	if len(byBase) > 1 {
		return Digest{}, fmt.Errorf("checksum file lists %q more than once in different directories", name)
	}
	return Digest{}, fmt.Errorf("checksum file has no entry for %q", name)
}

func parseChecksumLine(line string) (file, value string, ok bool) {
	// BSD: "SHA256 (file) = hex"
	if i := strings.Index(line, " ("); i > 0 {
		if j := strings.LastIndex(line, ") = "); j > i {
			return line[i+2 : j], line[j+4:], true
		}
	}
	value, file, found := strings.Cut(line, " ")
	if !found {
		return "", "", false
	}
	file = strings.TrimLeft(file, " ")
	file = strings.TrimPrefix(file, "*") // binary mode marker
	return file, value, file != ""
}
