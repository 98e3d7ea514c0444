package translate

// referenceAllowed reports whether a ReferenceGrant in the target namespace
// lets objects of fromGroup/fromKind in fromNamespace refer to toGroup/toKind
// named toName (any name when the grant's "to" has no name).
func (t *translator) referenceAllowed(fromGroup, fromKind, fromNamespace, toGroup, toKind, toNamespace, toName string) bool {
	for _, g := range t.res.ReferenceGrants {
		if g.Namespace != toNamespace {
			continue
		}
		fromOK := false
		for _, f := range g.Spec.From {
			if string(f.Group) == fromGroup && string(f.Kind) == fromKind && string(f.Namespace) == fromNamespace {
				fromOK = true
				break
			}
		}
		if !fromOK {
			continue
		}
		for _, to := range g.Spec.To {
			if string(to.Group) == toGroup && string(to.Kind) == toKind && (to.Name == nil || *to.Name == "" || string(*to.Name) == toName) {
				return true
			}
		}
	}
	return false
}
