//! Call arguments as Cedar values, built directly from the request's tape.
//!
//! Values are constructed, never parsed from Cedar's JSON form, so argument
//! text such as `{"__entity": …}` stays a plain record and cannot smuggle an
//! entity reference into a policy. JSON has no Cedar counterpart for
//! fractional numbers: they are left out (integral ones become `Long`), and
//! a policy reading a left-out argument fails to evaluate, which denies.

use cedar_policy::RestrictedExpression;
use simd_json::prelude::*;
use simd_json::tape::Value;
use toolgate_core::audit::Reason;

/// Deepest argument nesting handed to Cedar.
const MAX_DEPTH: usize = 32;

/// `Ok(None)` for values with no Cedar form (null, fractional numbers).
pub fn to_cedar(v: Value<'_, '_>, depth: usize) -> Result<Option<RestrictedExpression>, Reason> {
    if depth > MAX_DEPTH {
        return Err(Reason::ArgumentsTooDeep);
    }
    if let Some(s) = v.into_string() {
        return Ok(Some(RestrictedExpression::new_string(s.to_owned())));
    }
    if let Some(b) = v.as_bool() {
        return Ok(Some(RestrictedExpression::new_bool(b)));
    }
    if let Some(i) = v.as_i64() {
        return Ok(Some(RestrictedExpression::new_long(i)));
    }
    if v.is_u64() {
        return Ok(None);
    }
    if let Some(f) = v.as_f64() {
        let integral = f.fract() == 0.0 && f.abs() < 9.0e15;
        return Ok(integral.then(|| RestrictedExpression::new_long(f as i64)));
    }
    if let Some(arr) = v.as_array() {
        let mut items = Vec::with_capacity(arr.len());
        for item in arr.iter() {
            if let Some(x) = to_cedar(item, depth + 1)? {
                items.push(x);
            }
        }
        return Ok(Some(RestrictedExpression::new_set(items)));
    }
    if let Some(obj) = v.as_object() {
        let mut fields = Vec::with_capacity(obj.len());
        for (k, x) in obj.iter() {
            if let Some(x) = to_cedar(x, depth + 1)? {
                fields.push((k.to_owned(), x));
            }
        }
        return RestrictedExpression::new_record(fields)
            .map(Some)
            .map_err(|_| Reason::InvalidArguments);
    }
    Ok(None)
}
