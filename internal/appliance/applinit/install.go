package applinit

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"github.com/opencsp/installer/internal/appliance/payload"
)

// Partition names the appliance adds after the OS image's partitions.
const (
	SeedLabel = "CIDATA"
	DataLabel = "OPENCSPDATA"
	mib       = 1 << 20
)

// Install writes the OS image, the seed and the data partition to target.
// root is where the payload is (the mounted medium).
func Install(ctx context.Context, r *Runner, target, root string, m payload.Manifest, s payload.Settings) error {
	osEntry, l, err := fits(target, m, s)
	if err != nil {
		return err
	}
	seedMiB, dataMiB := l.SeedMiB, l.DataMiB
	if err := r.writeImage(ctx, target, filepath.Join(root, payload.OSImagePath), osEntry); err != nil {
		return err
	}
	if err := r.addPartitions(target, root, m, s, seedMiB, dataMiB, osEntry.Size); err != nil {
		return err
	}
	return nil
}

// fits sizes the target with the shared layout formula from the manifest's
// sizes alone (no payload read) and refuses a disk that is too small.
func fits(target string, m payload.Manifest, s payload.Settings) (payload.File, payload.Layout, error) {
	osEntry, ok := m.Find(payload.OSImagePath)
	if !ok {
		return payload.File{}, payload.Layout{}, fmt.Errorf("manifest has no %s", payload.OSImagePath)
	}
	l := payload.DiskLayout(osEntry.Size, m.Total(), s.SeedMiB)
	size, err := deviceSize(target)
	if err != nil {
		return payload.File{}, payload.Layout{}, err
	}
	if size < l.Need {
		return payload.File{}, payload.Layout{}, fmt.Errorf("refusing: target %s has %d bytes, the appliance needs %d (OS image, seed and data partitions); "+
			"attach a disk of at least %d MiB; disk left untouched", target, size, l.Need, (l.Need+mib-1)/mib)
	}
	return osEntry, l, nil
}

func roundMiB(n int64) int64 { return (n + mib - 1) &^ (mib - 1) }

func deviceSize(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, fmt.Errorf("target %s: %w", dev, err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("target %s size: %w", dev, err)
	}
	return n, nil
}

func (r *Runner) writeImage(ctx context.Context, target, src string, e payload.File) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("os image: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(target, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("target %s: %w", target, err)
	}
	defer out.Close()
	buf := make([]byte, 4*mib)
	var done int64
	next := int64(0)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := in.Read(buf)
		if n > 0 {
			if _, err := out.Write(buf[:n]); err != nil {
				return fmt.Errorf("write %s at %d: %w", target, done, err)
			}
			done += int64(n)
			if pct := done * 100 / max(e.Size, 1); pct >= next {
				r.say("writing os image: %d%% (%d/%d bytes)", pct, done, e.Size)
				next = (pct/25 + 1) * 25
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("read os image: %w", rerr)
		}
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", target, err)
	}
	back, err := os.Open(target)
	if err != nil {
		return fmt.Errorf("target %s: %w", target, err)
	}
	defer back.Close()
	sum, err := sha(io.LimitReader(back, e.Size))
	if err != nil {
		return fmt.Errorf("read back %s: %w", target, err)
	}
	if sum != e.SHA256 {
		return fmt.Errorf("os image on %s does not verify: sha256 %s, want %s", target, sum, e.SHA256)
	}
	r.say("os image written and verified (sha256 %s)", sum)
	return nil
}

func (r *Runner) addPartitions(target, root string, m payload.Manifest, s payload.Settings, seedMiB, dataMiB, osSize int64) (err error) {
	f, err := os.OpenFile(target, os.O_RDWR|os.O_EXCL, 0) // O_EXCL: EBUSY if anything holds the disk
	if err != nil {
		return fmt.Errorf("open %s: %w", target, err)
	}
	d, err := diskfs.OpenBackend(newCoalescer(f), diskfs.WithOpenMode(diskfs.ReadWriteExclusive))
	if err != nil {
		f.Close()
		return fmt.Errorf("open %s: %w", target, err)
	}
	defer func() {
		// Close writes what is still buffered: its error is a failed install.
		if cerr := d.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("finish %s: %w", target, cerr)
		}
	}()
	pt, err := d.GetPartitionTable()
	if err != nil {
		return fmt.Errorf("os image partition table on %s: %w", target, err)
	}
	tbl, ok := pt.(*gpt.Table)
	if !ok {
		return fmt.Errorf("os image on %s has no GPT (found %T); only GPT images are supported", target, pt)
	}
	sec := uint64(tbl.LogicalSectorSize)
	if sec == 0 {
		sec = 512
	}
	start := uint64(roundMiB(osSize)) / sec
	for _, p := range tbl.Partitions {
		if p.End+1 > start {
			start = (p.End + 1 + mib/sec - 1) / (mib / sec) * (mib / sec)
		}
	}
	seedEnd := start + uint64(seedMiB)*mib/sec - 1
	dataEnd := seedEnd + uint64(dataMiB)*mib/sec
	k := len(tbl.Partitions)
	tbl.Partitions = append(tbl.Partitions,
		&gpt.Partition{Index: k + 1, Start: start, End: seedEnd, Type: gpt.MicrosoftBasicData, Name: "cidata"},
		&gpt.Partition{Index: k + 2, Start: seedEnd + 1, End: dataEnd, Type: gpt.MicrosoftBasicData, Name: "opencsp-data"})
	if err := d.Partition(tbl); err != nil {
		return fmt.Errorf("write partition table on %s: %w", target, err)
	}
	n := len(tbl.Partitions)
	seed, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: n - 1, FSType: filesystem.TypeFat32, VolumeLabel: SeedLabel})
	if err != nil {
		return fmt.Errorf("seed filesystem: %w", err)
	}
	for name, content := range map[string]string{"user-data": s.UserData, "meta-data": s.MetaData, "network-config": s.NetworkConfig} {
		if name == "network-config" && content == "" {
			continue
		}
		if err := writeFS(seed, "/"+name, strings.NewReader(content)); err != nil {
			return fmt.Errorf("seed %s: %w", name, err)
		}
	}
	r.say("seed partition %d (%s) written", n-1, SeedLabel)
	data, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: n, FSType: filesystem.TypeFat32, VolumeLabel: DataLabel})
	if err != nil {
		return fmt.Errorf("data filesystem: %w", err)
	}
	files := 0
	for _, f := range m.Files {
		if f.Path == payload.OSImagePath {
			continue
		}
		rel := strings.TrimPrefix(f.Path, payload.Dir+"/")
		if dir := path.Dir("/" + rel); dir != "/" {
			if err := data.Mkdir(dir); err != nil {
				return fmt.Errorf("data mkdir %s: %w", dir, err)
			}
		}
		in, err := os.Open(filepath.Join(root, filepath.FromSlash(f.Path)))
		if err != nil {
			return fmt.Errorf("payload %s: %w", f.Path, err)
		}
		err = writeFS(data, "/"+rel, in)
		in.Close()
		if err != nil {
			return fmt.Errorf("data %s: %w", rel, err)
		}
		files++
	}
	mb, err := os.Open(filepath.Join(root, payload.ManifestPath))
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	defer mb.Close()
	if err := writeFS(data, "/"+payload.ManifestFile, mb); err != nil {
		return fmt.Errorf("data manifest: %w", err)
	}
	r.say("data partition %d (%s) written (%d files)", n, DataLabel, files)
	return nil
}

func writeFS(fsys filesystem.FileSystem, p string, src io.Reader) error {
	f, err := fsys.OpenFile(p, os.O_CREATE|os.O_RDWR|os.O_TRUNC)
	if err != nil {
		return err
	}
	// go-diskfs rescans and rewrites the whole FAT on every Write, so a 32 KiB
	// io.Copy makes a big file quadratic (minutes under TCG): few big writes.
	buf := make([]byte, 16*mib)
	if _, err := io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{src}, buf); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
