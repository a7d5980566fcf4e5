//! The names a verified client certificate carries, which map it to an
//! agent (`client_cert_names`).

use std::rc::Rc;

use x509_parser::extensions::GeneralName;

/// A client certificate's names: DNS and URI subject alternative names,
/// then the subject common names.
pub type PeerNames = Rc<[Box<str>]>;

/// Most names taken from one certificate: a certificate listing thousands
/// of SANs must not make every request scan them.
const MAX_NAMES: usize = 32;

/// The names in a DER end-entity certificate (already verified by rustls,
/// so a parse failure just means no names).
pub fn cert_names(der: &[u8]) -> PeerNames {
    let mut names: Vec<Box<str>> = Vec::new();
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Rc::from(names);
    };
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::URI(s) => names.push(Box::from(*s)),
                _ => {}
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            names.push(Box::from(s));
        }
    }
    names.truncate(MAX_NAMES);
    Rc::from(names)
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    use super::*;

    #[test]
    fn sans_then_common_name_other_kinds_skipped() {
        let pem = include_bytes!("testdata/client.pem");
        let der = CertificateDer::from_pem_slice(pem).unwrap();
        let names = cert_names(der.as_ref());
        let names: Vec<&str> = names.iter().map(|n| &**n).collect();
        assert_eq!(
            names,
            ["bot.agents.test", "spiffe://corp.test/agent/bot", "bot-cn"]
        );
    }

    #[test]
    fn garbage_has_no_names() {
        assert!(cert_names(b"\x30\x03\x02\x01\x01").is_empty());
        assert!(cert_names(b"").is_empty());
    }
}
