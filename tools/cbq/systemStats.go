package system // server statistics from /proc instead of libsigar (cgo)

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"
)

const SIGAR_CGROUP_SUPPORTED = 1

type SystemStats struct{ pid int }

func NewSystemStats() (*SystemStats, error) { return &SystemStats{pid: os.Getpid()}, nil }
func (s *SystemStats) Close()               {}

func procStat() []string {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return nil
	}
	str := string(b)
	if i := strings.LastIndex(str, ")"); i >= 0 {
		str = str[i+2:]
	}
	return strings.Fields(str)
}

func (s *SystemStats) ProcessCpuStats() (int, uint64, uint64, error) {
	var ms uint64
	if f := procStat(); len(f) > 12 {
		u, _ := strconv.ParseUint(f[11], 10, 64)
		k, _ := strconv.ParseUint(f[12], 10, 64)
		ms = (u + k) * 10
	}
	return s.pid, ms, uint64(time.Now().UnixMilli()), nil
}

func (s *SystemStats) ProcessRSS() (int, uint64, error) {
	var rss uint64
	if f := procStat(); len(f) > 21 {
		pages, _ := strconv.ParseUint(f[21], 10, 64)
		rss = pages * uint64(os.Getpagesize())
	}
	return s.pid, rss, nil
}

func meminfo(key string) uint64 {
	fh, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == key+":" {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			return v * 1024
		}
	}
	return 0
}

func (s *SystemStats) SystemFreeMem() (uint64, error)       { return meminfo("MemFree"), nil }
func (s *SystemStats) SystemActualFreeMem() (uint64, error) { return meminfo("MemAvailable"), nil }
func (s *SystemStats) SystemTotalMem() (uint64, error)      { return meminfo("MemTotal"), nil }
func (s *SystemStats) GetTotalAndFreeMem() (uint64, uint64, uint64, bool, error) {
	return meminfo("MemTotal"), meminfo("MemFree"), meminfo("MemAvailable"), false, nil
}

type SigarCpuT struct{ Sys, User, Nice, Irq, SoftIrq, Wait, Idle, Stolen uint64 }

func (h *SystemStats) SigarCpuGet() (*SigarCpuT, error) { return &SigarCpuT{}, nil }

type SigarControlGroupInfo struct {
	Supported, Version                  uint8
	NumCpuPrc                           uint16
	MemoryMax, MemoryCurrent, UsageUsec uint64
}

func (h *SystemStats) GetControlGroupInfo() *SigarControlGroupInfo { return &SigarControlGroupInfo{} }
