package events

// EncodeJSON writes the JSON body an earlier version wrote.
var EncodeJSON = encodeJSON
