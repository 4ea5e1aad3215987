package drivers

// ParseTimeLocal is parseTimeLocal, for the differential test.
var ParseTimeLocal = parseTimeLocal

// TimeLocalLayout is timeLocalLayout, for the differential test.
const TimeLocalLayout = timeLocalLayout
