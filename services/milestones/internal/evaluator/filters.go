package evaluator

import (
	"fmt"
	"slices"
	"strings"

	"github.com/stickpoint/stickpoint/pkg/specfile"
)

// whereSQL is the SQL of property conditions over the JSON column col,
// with the meaning progress.Matches gives them (checked against it on
// random properties in TestSQLFiltersMatchTheGoFilters): values compare
// by JSON type and value, gt..lte only numbers, prefix only strings, and
// a missing property fails every operator but ne and `exists: false`.
func whereSQL(col string, conds []specfile.Condition) (string, []any) {
	var parts []string
	var args []any
	for _, c := range conds {
		path := strings.Repeat(", ?", len(c.Path))
		pathArgs := make([]any, len(c.Path))
		for i, p := range c.Path {
			pathArgs[i] = p
		}
		typ := "JSONType(" + col + path + ")"
		has := "JSONHas(" + col + path + ")"
		// eq is the SQL of "the property equals v", with its args.
		eq := func(v any) (string, []any) {
			args := slices.Clone(pathArgs)
			switch x := v.(type) {
			case string:
				return fmt.Sprintf("(%s = 'String' AND JSONExtractString(%s%s) = ?)", typ, col, path), append(append(args, pathArgs...), x)
			case float64:
				return fmt.Sprintf("(%s IN ('Int64', 'UInt64', 'Double') AND JSONExtractFloat(%s%s) = ?)", typ, col, path), append(append(args, pathArgs...), x)
			case bool:
				return fmt.Sprintf("(%s = 'Bool' AND JSONExtractBool(%s%s) = ?)", typ, col, path), append(append(args, pathArgs...), x)
			default: // null, present
				return fmt.Sprintf("(%s AND %s = 'Null')", has, typ), append(args, pathArgs...)
			}
		}
		switch c.Op {
		case specfile.OpExists:
			if c.Exists {
				parts = append(parts, has)
			} else {
				parts = append(parts, "NOT "+has)
			}
			args = append(args, pathArgs...)
		case specfile.OpEq:
			q, a := eq(c.Value)
			parts, args = append(parts, q), append(args, a...)
		case specfile.OpNe:
			q, a := eq(c.Value)
			parts, args = append(parts, "NOT "+q), append(args, a...)
		case specfile.OpIn:
			var ors []string
			for _, v := range c.Values {
				q, a := eq(v)
				ors, args = append(ors, q), append(args, a...)
			}
			parts = append(parts, "("+strings.Join(ors, " OR ")+")")
		case specfile.OpPrefix:
			parts = append(parts, fmt.Sprintf("(%s = 'String' AND startsWith(JSONExtractString(%s%s), ?))", typ, col, path))
			args = append(append(append(args, pathArgs...), pathArgs...), c.Value)
		default:
			op := map[string]string{specfile.OpGt: ">", specfile.OpGte: ">=", specfile.OpLt: "<", specfile.OpLte: "<="}[c.Op]
			parts = append(parts, fmt.Sprintf("(%s IN ('Int64', 'UInt64', 'Double') AND JSONExtractFloat(%s%s) %s ?)", typ, col, path, op))
			args = append(append(append(args, pathArgs...), pathArgs...), c.Value)
		}
	}
	return strings.Join(parts, " AND "), args
}
