package dedupe

// Slot is slot, for the tests.
var Slot = slot
