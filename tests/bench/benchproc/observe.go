package benchproc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// Series is one sample of a Prometheus text exposition.
type Series struct {
	Name   string
	Labels map[string]string
	Raw    string // the label set as written, braces included ("" for none)
	Value  float64
}

// Exposition is a scraped /metrics page.
type Exposition []Series

// Scrape reads url's Prometheus text exposition.
func Scrape(url string) Exposition {
	res, err := http.Get(url)
	Check(err)
	defer res.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(res.Body)
	Check(err)
	return ParseExposition(b.Bytes())
}

// APIServerMetrics reads the apiserver's /metrics through c.
func APIServerMetrics(c kubernetes.Interface) Exposition {
	body, err := c.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	Check(err)
	return ParseExposition(body)
}

// Sum adds the values of name's series whose label set contains each of
// sel verbatim (`verb="POST"`).
func (e Exposition) Sum(name string, sel ...string) float64 {
	var v float64
next:
	for _, s := range e {
		if s.Name != name {
			continue
		}
		for _, x := range sel {
			if !strings.Contains(s.Raw, x) {
				continue next
			}
		}
		v += s.Value
	}
	return v
}

// ParseExposition reads the Prometheus text format's samples (label values
// here hold no commas or escaped quotes, which keeps the split simple).
func ParseExposition(b []byte) Exposition {
	var out Exposition
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		head := line[:i]
		s := Series{Name: head, Labels: map[string]string{}, Value: v}
		if j := strings.IndexByte(head, '{'); j >= 0 {
			s.Name, s.Raw = head[:j], head[j:]
			for _, kv := range strings.Split(strings.Trim(head[j:], "{}"), ",") {
				if k, val, ok := strings.Cut(kv, "="); ok {
					s.Labels[k] = strings.Trim(val, `"`)
				}
			}
		}
		out = append(out, s)
	}
	return out
}

// CPUSeconds is a process's user+system CPU time from /proc/<pid>/stat (0
// when it has gone).
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // USER_HZ
}

// CPUByCommand sums the CPU seconds of every live process by its command
// name (/proc/<pid>/comm: "postgres", "kube-apiserver", "etcd"). A process
// that exits between two readings takes its seconds with it, so compare
// readings of long-lived processes.
func CPUByCommand() map[string]float64 {
	out := map[string]float64{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		comm, err := os.ReadFile(d + "/comm")
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		out[strings.TrimSpace(string(comm))] += CPUSeconds(pid)
	}
	return out
}

// MachineCPU returns the machine's busy and total CPU seconds since boot,
// summed over its CPUs (/proc/stat): the busy share between two readings
// says how loaded the machine was.
func MachineCPU() (busy, total float64) {
	b, err := os.ReadFile("/proc/stat")
	Check(err)
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)[1:] // user nice system idle iowait irq softirq steal ...
	for i, v := range f {
		x, _ := strconv.ParseFloat(v, 64)
		if i >= 8 { // guest time is counted in user already
			break
		}
		total += x / 100
		if i != 3 && i != 4 {
			busy += x / 100
		}
	}
	return busy, total
}

// HistogramDelta is what a Prometheus histogram observed between two
// scrapes: its count, its mean and an upper bound of its q-quantile (the
// first bucket boundary that holds it), summed over the series that match
// sel.
func HistogramDelta(before, after Exposition, name string, q float64, sel ...string) (n float64, mean, quantile float64) {
	n = after.Sum(name+"_count", sel...) - before.Sum(name+"_count", sel...)
	if n <= 0 {
		return 0, 0, 0
	}
	mean = (after.Sum(name+"_sum", sel...) - before.Sum(name+"_sum", sel...)) / n
	quantile = math.Inf(1)
	for _, s := range after {
		if s.Name != name+"_bucket" || s.Labels["le"] == "+Inf" {
			continue
		}
		bound, err := strconv.ParseFloat(s.Labels["le"], 64)
		if err != nil || bound >= quantile {
			continue
		}
		bucket := append(slices.Clip(sel), `le="`+s.Labels["le"]+`"`)
		if after.Sum(name+"_bucket", bucket...)-before.Sum(name+"_bucket", bucket...) >= q*n {
			quantile = bound
		}
	}
	return n, mean, quantile
}
