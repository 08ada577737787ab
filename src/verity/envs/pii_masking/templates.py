"""Sentence and form templates for the synthetic PII-masking generator.

Pure data, expanded by :mod:`verity.envs.pii_masking.generator`. Template mini-language:

* ``{field}``   a value from a field generator; PII fields (see ``PII_FIELDS`` in the
  generator) become ``[PII]`` in the answer, every other field is a distractor that stays.
  A trailing digit picks another entity: ``{name2}`` is a second person, ``{email2}`` is that
  person's email; the same key inside one row always gives the same value.
* ``<a|b|c>``   one alternative, chosen uniformly (may nest and contain fields).
* ``[text]``    optional text, kept with probability 1/2.

Square brackets and angle brackets are syntax, never literal text (``[PII]`` must stay
unambiguous in answers). Titles, labels and punctuation around a PII value are never masked;
a full name, a full postal address or a date is ONE value (one ``[PII]``), so templates never
put two PII fields next to each other with only a space between them.
"""

from __future__ import annotations

# --- sentence templates: (name, template, weight). Weight < 1 for zero-PII templates. -----

SENTENCES: list[tuple[str, str, float]] = [
    # support tickets
    ("support_login", "<Hi|Hello|Hey>, <this is|my name is|it's> {name}. I <can't|cannot> log in to my "
     "{company} account[ since {weekday}]. My username is {username}[ and the email on file is {email}].", 1),
    ("support_followup", "Following up on ticket {ticket}: the <customer|caller>, {name}, <reports|says> the app "
     "crashes on version {version}. <Best callback number|Callback number> is {phone}.", 1),
    ("support_reply", "<Hi|Hello> {first}, thanks for contacting {company} support. <I've|We have> reset the "
     "password for {email}. Please sign in within {dur}.[ - {first2}]", 1),
    ("support_refund", "Customer {name} <requested|asked for> a refund of {amount} for order {order}. <The card|"
     "Card on file> ends in {cardlast}.[ The refund should post within {days} business days.]", 1),
    ("support_escalation", "<Escalating|Please escalate> case {case}: {first} has called {count} times about "
     "<a double charge|a missing delivery|a locked account>. <Reach|Contact> them at {email} or {phone}.", 1),
    ("support_nopii", "Ticket {ticket}: <the export button|the search page|checkout> <returns|fails with> error "
     "{errcode} on version {version}[ for about {pct} of users]. <Escalated to tier 2|Assigned to the web team> "
     "at {time}.", 0.4),
    # email
    ("email_address_check", "<Dear|Hi|Hello> {title} {last},\n<Thank you for your application|Thanks for reaching "
     "out>. <Please|Could you> confirm your mailing address: {address}?[ We need it by {weekday}.]", 1),
    ("email_invoice", "From: {email}\nTo: {email2}\nSubject: <Invoice|Re: invoice> {invoice}\n<Hi|Hey> {first2}, "
     "<attached is|here is> the invoice for {amount}. <Thanks|Cheers>, {first}", 1),
    ("email_meeting", "Hi team, {name} will join the {company} call on {weekday} at {time}. Contact {first} at "
     "{phone} if the dial-in fails.", 1),
    ("email_signature", "<Best regards|Kind regards|Thanks>,\n{name}\n{jobtitle}, {company}\n<Mobile|Cell|Direct>"
     ": {phone}[\n{email}]", 1),
    ("email_ooo", "Auto-reply: I am out of the office until {weekday} with limited email access. For urgent "
     "requests, please contact the front desk<| on floor {floor}>.", 0.4),
    ("email_intro", "<Hi|Hello> {first}, I'd like to introduce {name2}, our new {jobtitle}. <You can reach|Reach> "
     "{first2} at {email2}.", 1),
    # account recovery / security
    ("recovery_reset", "A password reset was requested for {username}[ from IP {ip}]. If this wasn't you, please "
     "secure your account.[ The code expires in {dur}.]", 1),
    ("recovery_verify", "To verify your identity, please provide <your date of birth|the DOB on file> and the last "
     "four digits of your SSN. We have {email} as the recovery address.", 1),
    ("recovery_claim", "I lost access to my <phone|authenticator app>. The account is under {name}, date of birth "
     "{dob}, <and|with> recovery email {email}. Can you <unlock|restore> it?", 1),
    ("recovery_alert", "Security alert: new sign-in to {email} from {ip}[ on {weekday} at {time}]. <If this was "
     "you, no action is needed.|Not you? Change your password now.>", 1),
    # medical
    ("med_appointment", "<Appointment|Visit> <confirmed|scheduled> for {name} with Dr. {last2} on {date} at {time}"
     "[ in room {room}]. Please arrive {mins} minutes early.", 1),
    ("med_note", "Patient {name}, DOB {dob}, MRN {patid}, <presents with|reports> <a persistent cough|lower back "
     "pain|seasonal allergies|a mild rash> for {days} days. <Prescribed|Started on> {dose} mg<| twice daily>.", 1),
    ("med_referral", "Referring {title} {last} (DOB {dob}) to {hospital} cardiology. Contact the patient at "
     "{phone}.[ Insurance member ID {memberid}.]", 1),
    ("med_lab", "Lab results for patient ID {patid}: <glucose|A1C|cholesterol> <is|came back> <within|slightly "
     "above> the reference range. Follow-up with Dr. {last2} on {date}.", 1),
    ("med_pharmacy", "Your prescription is ready for pickup at the <pharmacy counter|drive-thru window>, {first}. "
     "Order {order} contains {qty} items[ and the copay is {amount}].", 1),
    ("med_nopii", "Reminder: the clinic closes at {time} on {weekday}. <Flu shots|Walk-in visits> are available "
     "<on floor {floor}|at the front desk> and take about {mins} minutes.", 0.4),
    # bank / transactions
    ("bank_alert", "<Transaction alert|Alert>: {amount} was <charged to|debited from> card ending {cardlast} at "
     "{company} on {date}. <Reply STOP to opt out.|Not you? Call the number on the back of your card.>", 1),
    ("bank_wire", "Please wire {amount} to {name}, IBAN {iban}[, reference {invoice}]. Send confirmation to "
     "{email} once <done|sent>.", 1),
    ("bank_dispute", "I'm disputing a {amount} charge on my <Visa|Mastercard|card> {card}. It posted on {date} and "
     "I never <made|authorized> that purchase. - {name}", 1),
    ("bank_open", "New checking account {acct} opened for {name}[ at the {company} branch]. Initial deposit: "
     "{amount}. Statements will go to {email}.", 1),
    ("bank_loan", "Loan application {case} for {name} (SSN {ssn}) was <approved|conditionally approved> at {pct} "
     "APR for {amount}.", 1),
    ("bank_nopii", "Interest rates on <savings|certificate> accounts rise to {pct} starting {weekday}. The change "
     "applies to balances over {amount}.", 0.4),
    # travel
    ("travel_flight", "Booking for {name}: flight {flight} from {city} to {city2}, <departing|leaving> {date} at "
     "{time}, seat {seat}.", 1),
    ("travel_passport", "Please update the passport number for traveler {name} to {passport}[, expiring {date}]. "
     "The booking is for {qty} passengers.", 1),
    ("travel_hotel", "Hotel reservation: {nights} nights, check-in {date}. Guest: {name}, phone {phone}.[ Total "
     "{amount}.]", 1),
    ("travel_car", "Car rental confirmed for {name}, driver's license {dl}. Pickup on {date} at {time}; return "
     "within {days} days.", 1),
    ("travel_gate", "Flight {flight} now departs from gate {gate} at {time}. Boarding <begins|starts> {mins} "
     "minutes before departure.", 0.4),
    # HR / employment
    ("hr_offer", "<We are pleased|We're happy> to offer {name} the position of {jobtitle} at {company}, starting "
     "{date}, with an annual salary of {amount}.", 1),
    ("hr_onboard", "New hire {name}, employee ID {empid}, needs a laptop and badge access by {weekday}. "
     "<Personal email|Contact>: {email}.", 1),
    ("hr_payroll", "Payroll change for employee {empid}: direct deposit to account {acct}[ effective {date}]. "
     "<Submitted|Approved> by {first2}.", 1),
    ("hr_leave", "{first} <will be|is> on leave from {date} to {date2}. Please route their tickets to the {team} "
     "queue.", 1),
    ("hr_review", "Performance review for {name} (ID {empid}) is <scheduled|set> for {date} in room {room}. "
     "Reviewer: {name2}.", 1),
    ("hr_nopii", "Reminder: timesheets are due by {time} on {weekday}. <Overtime|PTO> requests over {hours} hours "
     "need manager approval.", 0.4),
    # shipping
    ("ship_delivery", "Your package {tracking} <will arrive|is out for delivery> <today|on {weekday}> between "
     "{time} and {time2}. <Delivering to|Address>: {address}.", 1),
    ("ship_missed", "We tried to deliver order {order} to {street} but nobody was home. <Reschedule online|Pick it "
     "up at the front desk>[ or text {first} at {phone}].", 1),
    ("ship_change", "Hi, I moved. Please change the shipping address on order {order} to {address}. Thanks, "
     "{name}", 1),
    ("ship_nopii", "Order {order}: {qty} x {product} shipped <via ground|by express> on {weekday}. Estimated "
     "delivery in {days} days.", 0.4),
    # insurance
    ("ins_claim", "Claim {claim} <filed|submitted> by {name}, policy {policy}, for water damage at {address} on "
     "{date}.", 1),
    ("ins_auto", "Policyholder {name} reported a <fender bender|minor collision> on {date}. License plate {plate}"
     "[, deductible {amount}].", 1),
    ("ins_beneficiary", "Beneficiary update: {name2} (DOB {dob2}) <replaces|is added alongside> the prior "
     "beneficiary on policy {policy}. Signed by {name}.", 1),
    ("ins_quote", "Your quote {case} for <renters|auto|home> coverage is {amount} per month, a {pct} discount for "
     "bundling.", 0.4),
    # school
    ("school_enroll", "Student {name}, ID {studid}, is enrolled in <Algebra II|Biology 101|Intro to Python> for "
     "the <fall|spring> term. Parent contact: {name2}, {phone2}.", 1),
    ("school_absence", "Please excuse {first} from class on {date}; {first} had a dentist appointment. - {name2}", 1),
    ("school_grades", "Grades for student {studid} have been posted. Term average: {pct}.[ Questions can go to "
     "{email}.]", 1),
    ("school_nopii", "Room {room} is reserved for the <chemistry|robotics|debate> club every {weekday} from {time} "
     "to {time2}.", 0.4),
    # legal
    ("legal_notice", "Notice to {name}, residing at {address}: the hearing in case {case} is set for {date}.", 1),
    ("legal_witness", "Witness statement taken from {name} on {date}. The witness said the incident occurred "
     "around {time} near the <loading dock|front entrance|parking garage>.", 1),
    ("legal_contract", "This agreement is made between {company} and {name} (the Contractor), SSN {ssn}, "
     "effective {date}.", 1),
    # real estate / rental
    ("rent_application", "Rental application for listing {listing}: applicant {name}, current address {address}, "
     "monthly income {amount}.", 1),
    ("rent_lease", "Lease for {street} signed by {name} on {date}. Rent of {amount} is due monthly.", 1),
    ("rent_maintenance", "Maintenance request from {first} at {street}: the <kitchen sink|water heater|AC unit> is "
     "<leaking|broken>. Available <after|before> {time}.", 1),
    ("rent_nopii", "Open house this {weekday} from {time} to {time2}: {beds} bedrooms, {baths} baths, listed at "
     "{amount}.", 0.4),
    # chat messages
    ("chat_new_number", "<hey|yo|hi> it's {first}, new number, save it: {phone}[ - the old one is dead]", 1),
    ("chat_meetup", "{first}: are we still on for {weekday}?\n{first2}: yep, {time} <at the usual place|by the "
     "front desk>. bring the {product}", 1),
    ("chat_address", "<can you|could u> send the package to my <mom's|sister's> place? it's {address}[ - her name "
     "is {name2}]", 1),
    ("chat_payment", "<sent you|just sent> {amount} for dinner[, my handle is @{username}]", 1),
    ("chat_birthday", "reminder: {first}'s birthday is {date}! we're getting a cake for {count} people", 1),
    # logs
    ("log_auth", "{ltime} WARN auth: failed login for user={username} from {ip}[ attempt={count}]", 1),
    ("log_api", "{ltime} INFO api: GET /v{major}/orders/{orderno} {status} {ms}ms client={ip}", 1),
    ("log_signup", "{ltime} INFO signup: new account email={email} name=\"{name}\" plan={plan}", 1),
    ("log_nopii", "{ltime} ERROR worker-{count}: job {jobid} failed with {errcode} after {ms}ms; retry {qty} of "
     "12", 0.4),
    # misc: voicemail, government, IT, reservations, memberships
    ("voicemail", "<Hi|Hello>, this is {name} calling about <my|the> <order|invoice> {order}. Please call me back "
     "at {phone}[ before {time}]. Thanks.", 1),
    ("gov_tax", "Tax return for {name}, SSN {ssn}, <was received|is being processed>; a refund of {amount} is "
     "expected in {weeks} weeks.", 1),
    ("gov_dmv", "Driver's license {dl} for {name} expires on {date}. You can renew online or at any office.", 1),
    ("it_asset", "IT: laptop {asset} assigned to {name} ({email}) last checked in from {ip} on {weekday}.", 1),
    ("restaurant", "Table for {qty} under {last} at {time} on {weekday}. Contact number: {phone}.", 1),
    ("event_signup", "{name} registered for the <webinar|workshop> on {date}; the confirmation was sent to "
     "{email}.", 1),
    ("confirm_dob_zip", "Before we continue, please confirm: is your date of birth {dob} and your ZIP code {zip}?", 1),
    ("parking", "Parking permit for plate {plate} is valid through {date} in lot {lot}.", 1),
    ("library", "Library card {memberid} belonging to {name} has {count} overdue books; the fine is {amount}.", 1),
    ("gym", "Membership {memberid} for {name} was <frozen|paused> until {date}. The monthly fee of {amount} resumes "
     "after that.", 1),
    ("utility", "Account {acct} at {address} is past due by {amount}. Service may be interrupted after {weekday}.", 1),
    # longer, multi-sentence texts
    ("long_support_order", "<Hello|Hi> support,\nI placed order {order} on {weekday} for {qty} x {product} totaling "
     "{amount}, but the tracking page still shows it as pending. <The account is registered to|My account is "
     "under> {email}[ and my phone is {phone}]. Could you check what happened? I need it before {weekday2}.\n"
     "<Thanks|Regards>, {name}", 2.5),
    ("long_discharge", "Discharge summary: {name} (MRN {patid}) was admitted on {date} for <pneumonia|a fractured "
     "wrist|dehydration> and discharged after {days} days in room {room}. Continue {dose} mg every {freq} hours. "
     "Follow-up with Dr. {last2} at {hospital}; <the patient can be reached|call the patient> at {phone}.", 2.5),
    ("long_fraud", "We noticed unusual activity on account {acct}. {count} transactions totaling {amount} were "
     "made from IP {ip} on {date}. If you did not authorize them, please call us back[, {title} {last}]. For your "
     "security we have temporarily frozen the card ending in {cardlast}.", 2.5),
    ("long_badge", "On {date} at about {time}, {name} (employee {empid}) reported that the badge reader on floor "
     "{floor} was not working. Facilities ticket {ticket} was opened and the issue was fixed within {dur}. No "
     "other employees were affected.", 2.5),
    ("long_itinerary", "Itinerary for {name}:\n{weekday} - flight {flight} departs {city} at {time}, seat {seat}."
     "\n{weekday2} - return flight {flight2} at {time2}.\nBooking contact: {email}[, {phone}].", 2.5),
    ("long_auto_claim", "Hello, I'm writing about claim {claim}. My car, plate {plate}, was hit in a parking garage "
     "on {date}. The repair estimate is {amount} and the shop needs approval within {days} days. My policy number "
     "is {policy}.[ You can reach me at {phone}.] - {name}", 2.5),
    ("long_field_trip", "Dear parents, our field trip is on {weekday} and the bus leaves at {time}. The cost is "
     "{amount} per student. Please send the signed permission slip with {first}'s student ID, {studid}, to room "
     "{room}. Questions? Email me at {email2}. - {title2} {last2}", 2.5),
    ("long_legal", "Re: case {case}. Our client, {name}, was served at {address} on {date}. The response is due in "
     "{days} days. Please direct all correspondence to our office rather than contacting {first} directly.", 2.5),
    ("long_rent", "Hi {first}, this is a reminder that rent of {amount} for {street} is due on {date}. A late fee "
     "of {pct} applies after {days} days. You can pay online or drop a check at the front desk. Thanks, {name2}, "
     "property manager", 2.5),
    ("long_vpn", "Hi IT, my laptop {asset} keeps dropping off the VPN since the version {version} update. I've "
     "restarted it {count} times. My username is {username} and my current IP is {ip}. I'm in room {room} until "
     "{time} if someone can stop by. - {name}", 2.5),
    ("long_profile", "Please update my profile: new mailing address {address}, new phone {phone}. Keep the email "
     "{email} as is.[ My date of birth is {dob} if you need to verify.] Thanks!", 2.5),
    ("long_exception", "Delivery exception for tracking {tracking}: the driver could not access {street} at {time} "
     "because the gate was locked. We will try again on {weekday}. To leave instructions, reply to this message"
     "[ or text {first} at {phone}].", 2.5),
    ("long_group_chat", "{first}: who's picking up the {product}?\n{first2}: me, I'll be there at {time}\n{first}: "
     "cool, the address is {address}\n{first2}: got it", 2.5),
    ("long_email_thread", "Quick update on invoice {invoice}: the payment of {amount} was received on {date}. "
     "Thanks again.\n\nOn {weekday} at {time}, {name} ({email}) wrote:\n> Has the payment gone through?", 2.5),
    ("long_appointment", "Hi {first}, your appointment with Dr. {last2} at {hospital} is on {date} at {time}. "
     "Please bring your insurance card<| with member ID {memberid}> and arrive {mins} minutes early to fill out "
     "paperwork. To reschedule, reply at least {hours} hours in advance.", 2.5),
    ("long_nopii_outage", "Service update: the {company} mobile app was unavailable for about {dur} on {weekday} "
     "after the version {version} release. Roughly {pct} of logins failed with error {errcode}. Order {order} and "
     "ticket {ticket} were used to track the fix.", 0.4),
    ("callback_note", "{name} called at {time} about invoice {invoice}.< Please call back at {phone}.| Wants a "
     "callback at {phone}.| No callback needed.>", 1),
    ("recovery_added", "{email} was added as a recovery address for {username} on {date}.[ Not you? Remove it in "
     "settings.]", 1),
    ("phone_verified", "{phone} is now verified for two-step login. <If you didn't request this|If this wasn't "
     "you>, contact {company} support.", 1),
    ("survey_nopii", "Thanks for completing our survey! {pct} of respondents rated version {version} <highly|as an "
     "improvement>.", 0.4),
]

# --- "Field: value" forms: (name, header alternatives, lines, weight). -------------------------
# Each row keeps a random subset (at least 3) of the lines, in original or shuffled order.

FORMS: list[tuple[str, str, list[str], float]] = [
    ("form_patient", "<Patient Intake|New Patient Form>", [
        "<Name|Patient name>: {name}", "<DOB|Date of birth>: {dob}", "Phone: {phone}",
        "Insurance ID: {memberid}", "Reason for visit: <annual checkup|follow-up|sore throat>",
        "Preferred time: {time}"], 1),
    ("form_shipping", "<Shipping Label|Ship To>", [
        "Recipient: {name}", "Address: {address}", "Phone: {phone}", "Weight: {weight} lb",
        "Service: <Ground|Express|Priority>", "Order: {order}"], 1),
    ("form_employee", "Employee Record", [
        "<Employee ID|Emp ID>: {empid}", "Name: {name}", "<Email|Work email>: {email}",
        "Department: {team}", "Start date: {date}", "Office: room {room}"], 1),
    ("form_wire", "Wire Request", [
        "Beneficiary: {name}", "IBAN: {iban}", "Amount: {amount}", "Reference: {invoice}",
        "Requested by: {email}"], 1),
    ("form_account", "<Account Details|Profile>", [
        "Username: {username}", "Email: {email}", "Last login IP: {ip}", "Plan: {plan}", "Seats: {qty}"], 1),
    ("form_incident", "Incident Report", [
        "Reported by: {name}", "Time: {time}", "Location: <loading dock|front desk|parking garage>",
        "Badge: {empid}", "Severity: <low|medium|high>"], 1),
    ("form_student", "Enrollment Form", [
        "Student: {name}", "Student ID: {studid}", "Date of birth: {dob}", "Guardian: {name2}",
        "Guardian phone: {phone2}", "Grade: {grade}"], 1),
    ("form_claim", "Claim Form", [
        "Policy number: {policy}", "Insured: {name}", "Date of loss: {date}", "Estimated damage: {amount}",
        "Claim: {claim}"], 1),
    ("form_kyc", "ID Verification", [
        "Full name: {name}", "SSN: {ssn}", "Passport: {passport}", "Address: {address}", "Status: pending"], 1),
    ("form_order_nopii", "Order Summary", [
        "Order: {order}", "Items: {qty}", "Subtotal: {amount}", "Discount: {pct}", "Ship by: {weekday}"], 0.4),
]

# Optional lead-ins / closings (never PII) wrapped around prose templates for more surface forms.
PREFIXES = ["Urgent: ", "FYI: ", "Update: ", "Re: ", "Quick question. ", "Fwd: ", "Note: ", "Reminder: "]
SUFFIXES = [" Thanks in advance.", " Please advise.", " Let me know if you need anything else.", " Sent from my phone.",
            " Thank you!", " Have a great day.", " Much appreciated.", " Talk soon."]
NO_WRAP_PREFIXES = ("log_", "chat_", "long_group", "email_signature", "email_invoice", "long_email")

# --- word lists for distractor fields (none of these is personal data) ---------------------

COMPANIES = [
    "Northwind", "Bluepeak Bank", "Acme Logistics", "Brightline", "Orbital Health", "Cedar Credit Union",
    "Summit Insurance", "Lumen Labs", "Quickship", "Greenleaf Market", "Vertex Telecom", "Ironbridge",
    "Helios Energy", "Pinecrest Realty", "Nimbus Cloud", "Redwood Outfitters", "Silverline Air",
    "Crescent Pharmacy", "Atlas Fitness", "Beacon Utilities",
]
HOSPITALS = ["Harborview Clinic", "Mercy General", "Riverside Medical Center", "St. Anne's Hospital",
             "Lakeside Health", "Valley Children's Hospital"]
PRODUCTS = ["desk lamp", "wireless mouse", "USB-C charger", "water bottle", "yoga mat", "coffee grinder",
            "laptop stand", "bluetooth speaker", "phone case", "backpack", "air filter", "label printer"]
JOBTITLES = ["Account Manager", "Senior Analyst", "Office Coordinator", "Software Engineer", "Nurse Practitioner",
             "Sales Associate", "Project Lead", "Data Scientist", "Payroll Specialist", "Support Agent"]
TEAMS = ["Finance", "Engineering", "Sales", "Billing", "Support", "Operations", "Legal", "Facilities"]
PLANS = ["free", "pro", "team", "enterprise", "basic"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
AIRLINES = ["UA", "DL", "AA", "WN", "B6", "AS", "NK"]
ERRCODES = ["E-403", "E-500", "ERR_TIMEOUT", "0x80070005", "502", "E1027", "ERR_CONN_RESET"]
GRADES = ["9th", "10th", "11th", "12th", "3rd", "5th", "7th"]
DURATIONS = ["15 minutes", "30 minutes", "24 hours", "48 hours", "1 hour", "2 days"]
REAL_CITIES = ["Denver", "Austin", "Chicago", "Seattle", "Portland", "Boston", "Phoenix", "Atlanta",
               "San Diego", "Nashville", "Columbus", "Tampa", "Sacramento", "Omaha", "Raleigh", "Tucson"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
IBAN_COUNTRIES = ["DE", "GB", "FR", "NL", "ES", "IT", "IE", "BE"]
