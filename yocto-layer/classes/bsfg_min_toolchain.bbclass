# bsfg_toolchain_too_old(d, VAR, WANT, WHAT): the reason to skip a recipe whose toolchain is too
# old, or '' if it is new enough. VAR is the toolchain's version variable (RUSTVERSION,
# GOVERSION: "1.75%" in scarthgap's tcmode-default.inc); a toolchain layer that does not set it
# is not checked. Used as SKIP_RECIPE[PN] = "${@bsfg_toolchain_too_old(...)}" (base.bbclass skips
# a recipe whose SKIP_RECIPE[PN] is not empty), so that an image that needs the recipe stops at
# parse time with this reason instead of failing deep inside cargo or go.
def bsfg_toolchain_too_old(d, var, want, what):
    have = (d.getVar(var) or '').rstrip('%')
    if have and bb.utils.vercmp_string_op(have, want, '<'):
        return '%s %s needs %s >= %s, but %s is %s (see yocto-layer/README.md)' % (
            d.getVar('PN'), d.getVar('PV'), what, want, var, d.getVar(var))
    return ''
