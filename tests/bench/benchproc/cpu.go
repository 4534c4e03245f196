package benchproc

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"time"
)

// CPUSample is what the machine's processes have spent up to a moment.
type CPUSample struct {
	At          time.Time
	busy, total float64            // the machine's CPU seconds
	byCommand   map[string]float64 // CPU seconds of live processes by command name
	dispatcher  float64            // the dispatcher's (pid given to TakeCPU), 0 without one
	bench       float64            // this process's own
}

// ClusterCommands are the long-lived processes of kubebox and Postgres that
// CPUCost names; everything else the machine did is "rest" (build pods,
// kubebox's node, short-lived processes).
var ClusterCommands = []string{"postgres", "kube-apiserver", "etcd", "kube-controller", "kube-scheduler"}

// TakeCPU reads the machine's and its processes' CPU time now; dispatcher
// is the dispatcher's pid (0: none).
func TakeCPU(dispatcher int) CPUSample {
	s := CPUSample{At: time.Now(), byCommand: CPUByCommand(), bench: CPUSeconds(os.Getpid())}
	if dispatcher > 0 {
		s.dispatcher = CPUSeconds(dispatcher)
	}
	s.busy, s.total = MachineCPU()
	return s
}

// CPUCost is what happened between two CPUSamples: the machine's busy share
// (1 = one core busy throughout) and CPU ms per unit (a build) by process.
type CPUCost struct {
	Busy    float64
	PerUnit map[string]float64 // "dispatcher", ClusterCommands, "rest"
}

// Until is the cost from a to b of units builds.
func (a CPUSample) Until(b CPUSample, units int) CPUCost {
	n := float64(max(units, 1))
	c := CPUCost{Busy: (b.busy - a.busy) / (b.total - a.total) * float64(runtime.NumCPU()), PerUnit: map[string]float64{}}
	named := b.bench - a.bench
	for _, k := range ClusterCommands {
		v := b.byCommand[k] - a.byCommand[k]
		c.PerUnit[k] = v * 1000 / n
		named += v
	}
	c.PerUnit["dispatcher"] = (b.dispatcher - a.dispatcher) * 1000 / n
	named += b.dispatcher - a.dispatcher
	c.PerUnit["rest"] = (b.busy - a.busy - named) * 1000 / n
	return c
}

// CPUHeader and Row print CPUCosts as a table: the busy share (100% a core)
// and ms per build for the dispatcher, Postgres, the control plane's parts
// and the rest.
func CPUHeader(w io.Writer, label string) {
	fmt.Fprintf(w, "%-16s %6s %10s %9s %9s %9s %9s %9s\n", label, "busy", "dispatcher", "postgres", "apiserver", "etcd", "ctrl-mgr", "rest")
}

// Row prints one CPUCost under CPUHeader.
func (c CPUCost) Row(w io.Writer, label string) {
	fmt.Fprintf(w, "%-16s %5.0f%% %10.1f %9.1f %9.1f %9.1f %9.1f %9.1f\n", label, c.Busy*100, c.PerUnit["dispatcher"], c.PerUnit["postgres"],
		c.PerUnit["kube-apiserver"], c.PerUnit["etcd"], c.PerUnit["kube-controller"], c.PerUnit["rest"])
}
