package payload

import "testing"

func TestDiskLayout(t *testing.T) {
	const osBytes = 8*MiB + 1 // rounds up to 9 MiB
	tests := []struct {
		name              string
		total, seed       int64
		wantSeed, wantDat int64
	}{
		{"default seed, OS only", osBytes, 0, DefaultSeedMiB, 64},
		{"explicit seed, 100 MiB of data", osBytes + 100*MiB, 16, 16, 164},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DiskLayout(osBytes, tt.total, tt.seed)
			if l.SeedMiB != tt.wantSeed || l.DataMiB != tt.wantDat {
				t.Fatalf("layout = %+v, want seed %d data %d", l, tt.wantSeed, tt.wantDat)
			}
			if want := (9 + tt.wantSeed + tt.wantDat + 2) * MiB; l.Need != want {
				t.Errorf("need = %d, want %d", l.Need, want)
			}
		})
	}
}
