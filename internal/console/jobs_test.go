package console

import "testing"

func TestKeepJobsKeepsRunningJobs(t *testing.T) {
	var all []*job
	for id := 1; id <= maxJobs+10; id++ {
		// Jobs 1 to 3 and 20 run on; the others are done.
		running := id <= 3 || id == 20
		all = keepJobs(append(all, &job{ID: id, Done: !running}))
	}
	if len(all) != maxJobs {
		t.Fatalf("kept %d jobs, want %d", len(all), maxJobs)
	}
	kept := map[int]bool{}
	for _, j := range all {
		kept[j.ID] = true
	}
	for _, id := range []int{1, 2, 3, 20, maxJobs + 10} {
		if !kept[id] {
			t.Errorf("job %d was dropped", id)
		}
	}
	if kept[4] || kept[13] {
		t.Errorf("the oldest finished jobs were kept over newer ones")
	}
	// Only running jobs: none is dropped.
	all = nil
	for id := 1; id <= maxJobs+5; id++ {
		all = keepJobs(append(all, &job{ID: id}))
	}
	if len(all) != maxJobs+5 {
		t.Fatalf("kept %d running jobs, want all %d", len(all), maxJobs+5)
	}
}
