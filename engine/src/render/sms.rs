//! SMS segment accounting: which alphabet a text travels in and how many segments the carrier
//! bills. Pure.

/// How an SMS text travels: GSM-7 when every character is in the GSM 03.38 alphabet (escape
/// characters take two septets), else UCS-2. Segments: 160/153 septets, or 70/67 UTF-16 units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsInfo {
    pub encoding: &'static str,
    pub segments: i32,
}

/// GSM 03.38 default alphabet and its extension table (3GPP TS 23.038).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "^{}\\[~]|€\x0c";

pub fn sms_info(text: &str) -> SmsInfo {
    let septets: Option<usize> = text
        .chars()
        .map(|c| {
            if GSM7_BASIC.contains(c) {
                Some(1)
            } else if GSM7_EXTENSION.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (encoding, units, single, multi) = match septets {
        Some(n) => ("GSM-7", n, 160, 153),
        None => ("UCS-2", text.encode_utf16().count(), 70, 67),
    };
    let segments = if units <= single {
        1
    } else {
        units.div_ceil(multi)
    };
    SmsInfo {
        encoding,
        segments: segments as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sms_encoding_and_segments() {
        assert_eq!(
            sms_info(&"a".repeat(160)),
            SmsInfo {
                encoding: "GSM-7",
                segments: 1
            }
        );
        assert_eq!(
            sms_info(&"a".repeat(161)),
            SmsInfo {
                encoding: "GSM-7",
                segments: 2
            }
        );
        assert_eq!(
            sms_info(&"€".repeat(80)),
            SmsInfo {
                encoding: "GSM-7",
                segments: 1
            }
        );
        assert_eq!(
            sms_info(&"€".repeat(81)),
            SmsInfo {
                encoding: "GSM-7",
                segments: 2
            }
        );
        // ó is not in GSM 03.38 (ò is): one accent turns the whole SMS into UCS-2.
        assert_eq!(
            sms_info("Tu código es 123456"),
            SmsInfo {
                encoding: "UCS-2",
                segments: 1
            }
        );
        assert_eq!(
            sms_info("Votre code à usage unique"),
            SmsInfo {
                encoding: "GSM-7",
                segments: 1
            }
        );
        assert_eq!(
            sms_info("您的验证码是 123456"),
            SmsInfo {
                encoding: "UCS-2",
                segments: 1
            }
        );
        assert_eq!(
            sms_info(&"ç".repeat(71)),
            SmsInfo {
                encoding: "UCS-2",
                segments: 2
            }
        );
    }
}
