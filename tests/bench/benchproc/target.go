package benchproc

import (
	"fmt"
	"io"
)

// Target prints the line every benchmark ends with, one per target it
// measures, so a reader or a script sees at once where Kiln stands:
//
//	target: <what> = <figure> (goal <goal>) met|missed
//
// what names the figure ("intake vs plain INSERT at 32 clients"), figure is
// the measured value with its unit, goal the bound it is held to ("≥ 0.5"),
// met whether the figure is within it.
func Target(w io.Writer, what, figure, goal string, met bool) {
	verdict := "missed"
	if met {
		verdict = "met"
	}
	fmt.Fprintf(w, "target: %s = %s (goal %s) %s\n", what, figure, goal, verdict)
}
